// Demo participants for a brand-new embedded database, so a newcomer can call
// the node at once. Liquidity goes through the settlement loop like any other.
import { randomUUID } from 'node:crypto';
import type { ClearingCore, ParticipantInput } from './core.js';

export const demoParticipants: ParticipantInput[] = [
  { bic: 'ALPHDEFFXXX', name: 'Alpha Bank AG', kind: 'BANK', status: 'ACTIVE', acceptanceMode: 'AUTOMATIC', settlementCurrencies: ['EUR'] },
  { bic: 'BRAVFRPPXXX', name: 'Banque Bravo SA', kind: 'BANK', status: 'ACTIVE', acceptanceMode: 'AUTOMATIC', settlementCurrencies: ['EUR'] },
  { bic: 'CHRLITMMXXX', name: 'Banca Charlie SpA', kind: 'BANK', status: 'ACTIVE', acceptanceMode: 'AUTOMATIC', settlementCurrencies: ['EUR'] },
  { bic: 'XBGWUS33XXX', name: 'Cross-border Gateway US', kind: 'GATEWAY', status: 'ACTIVE', acceptanceMode: 'AUTOMATIC', settlementCurrencies: ['EUR'] },
];

/** Each demo bank starts with EUR 1,000,000.00 of liquidity. */
export const demoFundingMinor = 100_000_000n;

export async function seedDemo(core: ClearingCore): Promise<void> {
  for (const p of demoParticipants) {
    await core.createParticipant(p);
    if (p.kind !== 'BANK') continue;
    await core.changePosition(
      'FUND',
      { requestId: `demo-fund-${p.bic}`, bic: p.bic, currency: 'EUR', amountMinor: demoFundingMinor },
      'amount',
      { cancelled: () => false, deadlineMs: Infinity },
    );
  }
}

/** A ready-to-paste grpcurl call that pays EUR 12.34 from the first demo bank to the second. */
export function demoExampleCall(address: string): string {
  const body = {
    transfer: {
      instruction_id: `demo-${Date.now()}`,
      end_to_end_id: 'E2E-DEMO-1',
      uetr: randomUUID(),
      debtor_agent: 'ALPHDEFFXXX',
      creditor_agent: 'BRAVFRPPXXX',
      amount: { currency: 'EUR', amount_minor: '1234' },
      debtor: { name: 'Demo Payer', iban: 'DE89370400440532013000' },
      creditor: { name: 'Demo Payee', iban: 'FR1420041010050500013M02606' },
      remittance_information: 'demo payment',
    },
  };
  return [
    `grpcurl -plaintext -H 'x-principal: participant/ALPHDEFFXXX' \\`,
    `  -d '${JSON.stringify(body)}' \\`,
    `  ${address} clearing.v1.ClearingService/SubmitTransfer`,
  ].join('\n');
}
