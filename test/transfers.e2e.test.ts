// Credit transfers end to end: every row of the outcome table, over a real
// socket, against a real Postgres. Each scenario sets up its own banks so the
// scenarios do not depend on each other's order.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status } from '@grpc/grpc-js';
import { ParticipantKind, ParticipantStatus } from '../src/gen/clearing/v1/participant.js';
import { TransferStatus, type CreditTransfer } from '../src/gen/clearing/v1/transfer.js';
import { failure } from './support/clients.js';
import { createBank, freshBic, participant, transfer, uniqueId } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';

let t: TestNode;

/** A fresh pair of banks (debtor funded with `fundMinor`), named so they never collide. */
async function banks(fundMinor = 1_000_00n) {
  const debtor = freshBic('D', 'DEFF');
  const creditor = freshBic('C', 'FRPP');
  await createBank(t.operator, debtor, fundMinor);
  await createBank(t.operator, creditor);
  return { debtor, creditor, client: t.participant(debtor) };
}

async function position(bic: string, currency = 'EUR') {
  const page = await t.operator.listPositions({ bic, currency, pageSize: 0, pageToken: '' });
  const p = page.positions[0];
  if (p === undefined) throw new Error(`no ${currency} position for ${bic}`);
  return p;
}

beforeAll(async () => {
  t = await startTestNode({ CLEARING_TRANSFER_AMOUNT_MAX_MINOR: '5000000' });
});
afterAll(async () => {
  await t?.stop();
});

describe('settlement', () => {
  test('a transfer within the available position settles and moves the money', async () => {
    const { debtor, creditor, client } = await banks(10_000n);
    const { result } = await client.submitTransfer({ transfer: transfer(debtor, creditor, 2_500n), waitForFinal: false });
    expect(result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_SETTLED, reasonCode: '', replayed: false });
    expect(result?.finalTime).toBeInstanceOf(Date);
    expect((await position(debtor)).balanceMinor).toBe(7_500n);
    expect((await position(creditor)).balanceMinor).toBe(2_500n);
    expect((await t.operator.reconcile({})).clean).toBe(true);
  });

  test('a debit cap lets the debtor go below zero, no further', async () => {
    const { debtor, creditor, client } = await banks(1_000n);
    await t.operator.setDebitCap({ requestId: uniqueId('cap'), bic: debtor, debitCap: { currency: 'EUR', amountMinor: 500n } });
    const ok = await client.submitTransfer({ transfer: transfer(debtor, creditor, 1_500n), waitForFinal: false });
    expect(ok.result?.status).toBe(TransferStatus.TRANSFER_STATUS_SETTLED);
    const over = await client.submitTransfer({ transfer: transfer(debtor, creditor, 1n), waitForFinal: false });
    expect(over.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_REJECTED, reasonCode: 'AM04' });
    expect(await position(debtor)).toMatchObject({ balanceMinor: -500n, availableMinor: 0n });
  });
});

describe('rejections are stored results with an ISO reason code', () => {
  type Setup = Awaited<ReturnType<typeof banks>>;
  const cases: [string, string, (s: Setup) => Promise<CreditTransfer>][] = [
    ['available < amount', 'AM04', async (s) => transfer(s.debtor, s.creditor, 1_000_01n)],
    ['amount above the per-transfer maximum', 'AM02', async (s) => transfer(s.debtor, s.creditor, 5_000_001n)],
    ['creditor agent not a participant', 'RC01', async (s) => transfer(s.debtor, 'NOPEDEFFXXX', 100n)],
    [
      'intermediary agent not a gateway',
      'RC01',
      async (s) => transfer(s.debtor, s.creditor, 100n, { intermediaryAgent: s.creditor === 'x' ? '' : 'NOPEDEFFXXX' }),
    ],
    [
      'debtor suspended',
      'AG01',
      async (s) => {
        await t.operator.updateParticipant({ participant: participant(s.debtor, { status: ParticipantStatus.PARTICIPANT_STATUS_SUSPENDED }), updateMask: ['status'] });
        return transfer(s.debtor, s.creditor, 100n);
      },
    ],
    [
      'creditor suspended',
      'AG01',
      async (s) => {
        await t.operator.updateParticipant({ participant: participant(s.creditor, { status: ParticipantStatus.PARTICIPANT_STATUS_SUSPENDED }), updateMask: ['status'] });
        return transfer(s.debtor, s.creditor, 100n);
      },
    ],
    ['currency not settled by the node', 'AM03', async (s) => transfer(s.debtor, s.creditor, 100n, { amount: { currency: 'XAU', amountMinor: 100n } })],
    [
      'creditor has no position in the currency',
      'AM03',
      async (s) => {
        await t.operator.updateParticipant({ participant: participant(s.debtor, { settlementCurrencies: ['EUR', 'CHF'] }), updateMask: ['settlement_currencies'] });
        await t.operator.fundPosition({ requestId: uniqueId('f'), bic: s.debtor, amount: { currency: 'CHF', amountMinor: 1_000n } });
        return transfer(s.debtor, s.creditor, 100n, { amount: { currency: 'CHF', amountMinor: 100n } });
      },
    ],
    [
      'UETR already used by another instruction',
      'DUPL',
      async (s) => {
        const first = transfer(s.debtor, s.creditor, 100n);
        await s.client.submitTransfer({ transfer: first, waitForFinal: false });
        return transfer(s.debtor, s.creditor, 100n, { uetr: first.uetr });
      },
    ],
  ];

  test.each(cases)('%s → REJECTED %s', async (_name, code, build) => {
    const setup = await banks();
    const before = await position(setup.debtor);
    const request = await build(setup);
    const { result } = await setup.client.submitTransfer({ transfer: request, waitForFinal: false });
    expect(result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_REJECTED, reasonCode: code, uetr: request.uetr });
    expect(result?.reason).toMatch(/\w+ .*\./);
    // Rejected: no money moved, and the rejection is stored and final.
    const after = await position(setup.debtor);
    expect(after.balanceMinor).toBe(before.balanceMinor + (code === 'DUPL' ? -100n : 0n));
    expect(after.reservedMinor).toBe(0n);
    const stored = await setup.client.getTransfer({ lookup: { $case: 'instructionId', value: request.instructionId } });
    expect(stored.transfer?.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_REJECTED, reasonCode: code });
    expect((await t.operator.reconcile({})).clean).toBe(true);
  });
});

describe('idempotency', () => {
  test('the same instruction again returns the first result, replayed, applied once', async () => {
    const { debtor, creditor, client } = await banks(10_000n);
    const request = transfer(debtor, creditor, 1_000n);
    const first = await client.submitTransfer({ transfer: request, waitForFinal: false });
    const again = await client.submitTransfer({ transfer: request, waitForFinal: false });
    expect(first.result?.replayed).toBe(false);
    expect(again.result).toEqual({ ...first.result, replayed: true });
    expect((await position(debtor)).balanceMinor).toBe(9_000n);
  });

  test('a replayed rejection is the same rejection', async () => {
    const { debtor, creditor, client } = await banks(10n);
    const request = transfer(debtor, creditor, 1_000n);
    const first = await client.submitTransfer({ transfer: request, waitForFinal: false });
    await t.operator.fundPosition({ requestId: uniqueId('f'), bic: debtor, amount: { currency: 'EUR', amountMinor: 10_000n } });
    const again = await client.submitTransfer({ transfer: request, waitForFinal: false });
    expect(again.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_REJECTED, reasonCode: 'AM04', replayed: true });
    expect(again.result?.finalTime).toEqual(first.result?.finalTime);
  });

  test('the same instruction id with other content is ALREADY_EXISTS and stores nothing', async () => {
    const { debtor, creditor, client } = await banks(10_000n);
    const request = transfer(debtor, creditor, 1_000n);
    await client.submitTransfer({ transfer: request, waitForFinal: false });
    const f = await failure(client.submitTransfer({ transfer: { ...request, amount: { currency: 'EUR', amountMinor: 999n }, uetr: randomUUID() }, waitForFinal: false }));
    expect(f.code).toBe(status.ALREADY_EXISTS);
    expect(f.reason).toBe('INSTRUCTION_ID_REUSED');
    expect((await position(debtor)).balanceMinor).toBe(9_000n);
    const listed = await t.operator.listTransfers({ bic: debtor, status: TransferStatus.TRANSFER_STATUS_UNSPECIFIED, pageSize: 0, pageToken: '' });
    expect(listed.transfers).toHaveLength(1);
  });
});

describe('malformed requests are INVALID_ARGUMENT and store nothing', () => {
  const cases: [string, Partial<CreditTransfer>, string][] = [
    ['missing instruction id', { instructionId: '' }, 'transfer.instruction_id'],
    ['missing end-to-end id', { endToEndId: '' }, 'transfer.end_to_end_id'],
    ['instruction id over 35 characters', { instructionId: 'x'.repeat(36) }, 'transfer.instruction_id'],
    ['bad creditor BIC', { creditorAgent: 'BAD' }, 'transfer.creditor_agent'],
    ['UETR not a UUID', { uetr: 'not-a-uuid' }, 'transfer.uetr'],
    ['IBAN checksum wrong', { creditor: { name: 'Jean Dupont', iban: 'FR1420041010050500013M02607' } }, 'transfer.creditor.iban'],
    ['currency not 3 letters', { amount: { currency: 'EURO', amountMinor: 100n } }, 'transfer.amount.currency'],
    ['amount zero', { amount: { currency: 'EUR', amountMinor: 0n } }, 'transfer.amount.amount_minor'],
    ['amount negative', { amount: { currency: 'EUR', amountMinor: -5n } }, 'transfer.amount.amount_minor'],
    ['debtor name over 140 characters', { debtor: { name: 'n'.repeat(141), iban: 'DE89370400440532013000' } }, 'transfer.debtor.name'],
    ['remittance over 140 characters', { remittanceInformation: 'r'.repeat(141) }, 'transfer.remittance_information'],
  ];

  test.each(cases)('%s', async (_name, override, field) => {
    const { debtor, creditor, client } = await banks();
    const request = transfer(debtor, creditor, 100n, override);
    const f = await failure(client.submitTransfer({ transfer: request, waitForFinal: false }));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.fields).toContain(field);
    const listed = await t.operator.listTransfers({ bic: debtor, status: TransferStatus.TRANSFER_STATUS_UNSPECIFIED, pageSize: 0, pageToken: '' });
    expect(listed.transfers).toHaveLength(0);
  });

  test('debtor = creditor', async () => {
    const { debtor, client } = await banks();
    const f = await failure(client.submitTransfer({ transfer: transfer(debtor, debtor, 100n), waitForFinal: false }));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.fields).toContain('transfer.creditor_agent');
  });

  test('a participant submitting for another debtor agent is PERMISSION_DENIED', async () => {
    const { debtor, creditor } = await banks();
    const impostor = t.participant(creditor);
    const f = await failure(impostor.submitTransfer({ transfer: transfer(debtor, creditor, 100n), waitForFinal: false }));
    expect(f.code).toBe(status.PERMISSION_DENIED);
    expect(f.reason).toBe('NOT_DEBTOR_AGENT');
  });
});

describe('SubmitTransfers', () => {
  test('items are independent, answered in order, and decided in arrival order', async () => {
    const { debtor, creditor, client } = await banks(1_000n);
    // Each of the first two fits alone; together they overdraw: the second is AM04.
    const items = [
      transfer(debtor, creditor, 700n),
      transfer(debtor, creditor, 700n),
      transfer(debtor, 'NOPEDEFFXXX', 1n),
      transfer(debtor, creditor, 300n),
    ];
    const { results } = await client.submitTransfers({ transfers: items, waitForFinal: false });
    expect(results.map((r) => [r.uetr, r.status, r.reasonCode])).toEqual([
      [items[0]?.uetr, TransferStatus.TRANSFER_STATUS_SETTLED, ''],
      [items[1]?.uetr, TransferStatus.TRANSFER_STATUS_REJECTED, 'AM04'],
      [items[2]?.uetr, TransferStatus.TRANSFER_STATUS_REJECTED, 'RC01'],
      [items[3]?.uetr, TransferStatus.TRANSFER_STATUS_SETTLED, ''],
    ]);
    expect((await position(debtor)).balanceMinor).toBe(0n);
  });

  test('a malformed item refuses the whole call with indexed field paths', async () => {
    const { debtor, creditor, client } = await banks();
    const f = await failure(
      client.submitTransfers({ transfers: [transfer(debtor, creditor, 1n), transfer(debtor, creditor, 1n, { uetr: 'x' })], waitForFinal: false }),
    );
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.fields).toEqual(['transfers[1].uetr']);
  });

  test('an empty batch and one over the limit are INVALID_ARGUMENT', async () => {
    const { client } = await banks();
    expect((await failure(client.submitTransfers({ transfers: [], waitForFinal: false }))).code).toBe(status.INVALID_ARGUMENT);
  });

  test('a reused instruction id inside a batch is answered AM05 in place and not stored', async () => {
    const { debtor, creditor, client } = await banks(1_000n);
    const first = transfer(debtor, creditor, 10n);
    const { results } = await client.submitTransfers({
      transfers: [first, { ...first, amount: { currency: 'EUR', amountMinor: 20n } }, { ...first }],
      waitForFinal: false,
    });
    expect(results.map((r) => [r.status, r.reasonCode, r.replayed])).toEqual([
      [TransferStatus.TRANSFER_STATUS_SETTLED, '', false],
      [TransferStatus.TRANSFER_STATUS_REJECTED, 'AM05', false],
      [TransferStatus.TRANSFER_STATUS_SETTLED, '', true],
    ]);
    expect((await position(debtor)).balanceMinor).toBe(990n);
  });
});

describe('reads', () => {
  test('GetTransfer answers the parties only', async () => {
    const { debtor, creditor, client } = await banks();
    const request = transfer(debtor, creditor, 5n);
    await client.submitTransfer({ transfer: request, waitForFinal: false });
    const byUetr = await t.participant(creditor).getTransfer({ lookup: { $case: 'uetr', value: request.uetr } });
    expect(byUetr.transfer?.transfer?.instructionId).toBe(request.instructionId);
    expect(byUetr.transfer?.transfer?.creditor?.iban).toBe(request.creditor?.iban);
    const outsider = await banks();
    const f = await failure(outsider.client.getTransfer({ lookup: { $case: 'uetr', value: request.uetr } }));
    expect(f.code).toBe(status.NOT_FOUND);
  });

  test('GetPosition shows only the caller\'s positions', async () => {
    const { debtor, client } = await banks(42n);
    const { positions } = await client.getPosition({ currency: '' });
    expect(positions).toHaveLength(1);
    expect(positions[0]).toMatchObject({ bic: debtor, currency: 'EUR', balanceMinor: 42n, availableMinor: 42n });
  });
});

describe('liquidity', () => {
  test('fund, defund and their replays', async () => {
    const { debtor } = await banks(0n);
    const requestId = uniqueId('fund');
    const funded = await t.operator.fundPosition({ requestId, bic: debtor, amount: { currency: 'EUR', amountMinor: 500n } });
    const replay = await t.operator.fundPosition({ requestId, bic: debtor, amount: { currency: 'EUR', amountMinor: 500n } });
    expect(funded.position?.balanceMinor).toBe(500n);
    expect(replay).toEqual({ ...funded, replayed: true });
    const reused = await failure(t.operator.fundPosition({ requestId, bic: debtor, amount: { currency: 'EUR', amountMinor: 501n } }));
    expect(reused.code).toBe(status.ALREADY_EXISTS);
    const defunded = await t.operator.defundPosition({ requestId: uniqueId('def'), bic: debtor, amount: { currency: 'EUR', amountMinor: 200n } });
    expect(defunded.position?.balanceMinor).toBe(300n);
    const tooMuch = await failure(t.operator.defundPosition({ requestId: uniqueId('def'), bic: debtor, amount: { currency: 'EUR', amountMinor: 301n } }));
    expect(tooMuch.code).toBe(status.FAILED_PRECONDITION);
    expect((await position(debtor)).balanceMinor).toBe(300n);
  });

  test('liquidity for an unknown participant or currency is refused', async () => {
    expect((await failure(t.operator.fundPosition({ requestId: uniqueId(), bic: 'NONEDEFFXXX', amount: { currency: 'EUR', amountMinor: 1n } }))).code).toBe(status.NOT_FOUND);
    const { debtor } = await banks();
    expect((await failure(t.operator.fundPosition({ requestId: uniqueId(), bic: debtor, amount: { currency: 'JPY', amountMinor: 1n } }))).code).toBe(status.FAILED_PRECONDITION);
  });

  test('Reconcile reports totals per currency', async () => {
    const r = await t.operator.reconcile({});
    expect(r.clean).toBe(true);
    expect(r.violations).toEqual([]);
    const eur = r.totals.find((x) => x.currency === 'EUR');
    expect(BigInt(eur?.balanceTotalMinor ?? 'x')).toBe(BigInt(eur?.fundedTotalMinor ?? 'x') - BigInt(eur?.defundedTotalMinor ?? 'x'));
    expect(eur?.journalDebitTotalMinor).toBe(eur?.journalCreditTotalMinor);
  });
});

describe('gateways', () => {
  test('a transfer naming a gateway as intermediary settles', async () => {
    const { debtor, creditor, client } = await banks();
    await createBank(t.operator, 'GWAYUS33XXX', 0n, { kind: ParticipantKind.PARTICIPANT_KIND_GATEWAY });
    const { result } = await client.submitTransfer({ transfer: transfer(debtor, creditor, 10n, { intermediaryAgent: 'GWAYUS33XXX' }), waitForFinal: false });
    expect(result?.status).toBe(TransferStatus.TRANSFER_STATUS_SETTLED);
  });
});
