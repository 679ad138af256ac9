// Domain fixtures: banks, liquidity and credit transfers that pass validation.
import { randomUUID } from 'node:crypto';
import {
  AcceptanceMode,
  ParticipantKind,
  ParticipantStatus,
  type Participant,
} from '../../src/gen/clearing/v1/participant.js';
import type { CreditTransfer } from '../../src/gen/clearing/v1/transfer.js';
import type { OperatorClient } from './clients.js';

export const ibans = {
  debtor: 'DE89370400440532013000',
  creditor: 'FR1420041010050500013M02606',
};
export const names = { debtor: 'Erika Mustermann', creditor: 'Jean Dupont' };

let counter = 0;
export function uniqueId(prefix = 'i'): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`.slice(0, 35);
}

export function participant(bic: string, overrides: Partial<Participant> = {}): Participant {
  return {
    bic,
    name: `Bank ${bic}`,
    kind: ParticipantKind.PARTICIPANT_KIND_BANK,
    status: ParticipantStatus.PARTICIPANT_STATUS_ACTIVE,
    acceptanceMode: AcceptanceMode.ACCEPTANCE_MODE_AUTOMATIC,
    settlementCurrencies: ['EUR'],
    createTime: undefined,
    updateTime: undefined,
    ...overrides,
  };
}

export async function createBank(operator: OperatorClient, bic: string, fundMinor = 0n, overrides: Partial<Participant> = {}): Promise<void> {
  await operator.createParticipant({ participant: participant(bic, overrides) });
  if (fundMinor > 0n) {
    await operator.fundPosition({ requestId: uniqueId('fund'), bic, amount: { currency: 'EUR', amountMinor: fundMinor } });
  }
}

export function transfer(debtorAgent: string, creditorAgent: string, amountMinor: bigint, overrides: Partial<CreditTransfer> = {}): CreditTransfer {
  return {
    instructionId: uniqueId(),
    endToEndId: 'E2E-1',
    uetr: randomUUID(),
    debtorAgent,
    creditorAgent,
    intermediaryAgent: '',
    amount: { currency: 'EUR', amountMinor },
    debtor: { name: names.debtor, iban: ibans.debtor },
    creditor: { name: names.creditor, iban: ibans.creditor },
    remittanceInformation: 'invoice 42',
    paymentRequestId: '',
    ...overrides,
  };
}

let bicCounter = 0;
/**
 * A fresh BIC for this test file: `<letter><3 letters counting up><country><location>XXX`,
 * so each scenario gets banks no other scenario touched.
 */
export function freshBic(letter: string, countryAndLocation: string): string {
  bicCounter += 1;
  const tag = [676, 26, 1].map((unit) => String.fromCharCode(65 + (Math.floor(bicCounter / unit) % 26))).join('');
  return `${letter}${tag}${countryAndLocation}XXX`;
}
