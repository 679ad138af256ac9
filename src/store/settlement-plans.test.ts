// The settlement statements must be index probes whatever the planner's
// statistics say: here the tables hold 60,000 transfers while the statistics
// still describe the empty tables of a fresh migration (autovacuum has not
// analysed them yet), the situation in which hash joins over whole-table scans
// were measured making every batch slower as the table grew.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { withClient } from './client.js';
import { beginSettlementSql, readSnapshotSql, writeBatch } from './settlement.js';
import type { BatchWrites, TransferRow } from './rows.js';

let db: TestDatabase;
const transfersStored = 60_000;
const batchSize = 1_000;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
    SELECT 'PLN' || chr(65 + i) || 'DEFFXXX', 'Plan bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}' FROM generate_series(0, 19) i;
    INSERT INTO positions (bic, currency, balance_minor) SELECT bic, 'EUR', 1000000000 FROM participants;`);
  await db.pool.query(
    `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
       debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, final_at, batch_id)
     SELECT 'PLN' || chr(65 + i % 20) || 'DEFFXXX', 'plan-' || i, 'e2e-' || i, gen_random_uuid(),
            'PLN' || chr(65 + (i + 1) % 20) || 'DEFFXXX', 'EUR', 1 + i % 1000, 'n', 'i', 'n', 'i',
            '\\x00', 'SETTLED', now(), now(), 1
       FROM generate_series(1, $1) i`,
    [transfersStored],
  );
}, 60_000);
afterAll(async () => {
  await db?.drop();
});

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/** EXPLAINs `text` inside a settlement transaction (rolled back) and returns every plan node. */
async function settlementPlan(name: string, text: string, values: unknown[]): Promise<PlanNode[]> {
  return withClient(db.pool, async (client) => {
    await client.query(beginSettlementSql);
    try {
      // Prepared like the real statement, so a cached generic plan would show here too.
      for (let i = 0; i < 7; i++) await client.query({ name, text: `EXPLAIN (FORMAT JSON) ${text}`, values });
      const result = await client.query({ name, text: `EXPLAIN (FORMAT JSON) ${text}`, values });
      return nodes((result.rows[0] as { 'QUERY PLAN': [{ Plan: PlanNode }] })['QUERY PLAN'][0].Plan);
    } finally {
      await client.query('ROLLBACK');
    }
  });
}

const wholeTableWork = (plan: PlanNode[]) =>
  plan
    .filter((n) => n['Node Type'] === 'Seq Scan' || n['Node Type'] === 'Hash Join' || n['Node Type'] === 'Merge Join')
    .map((n) => `${n['Node Type']}${n['Relation Name'] === undefined ? '' : ` on ${n['Relation Name']}`}`);

describe('settlement statement plans on a table bigger than its statistics say', () => {
  test('the snapshot read probes transfers by key', async () => {
    const instructions = Array.from({ length: batchSize }, (_, i) => `plan-${i * 37 + 1}`);
    const plan = await settlementPlan('plan_read', readSnapshotSql, [
      ['PLNADEFFXXX', 'PLNBDEFFXXX'],
      instructions.map((_, i) => `PLN${String.fromCharCode(65 + ((i * 37 + 1) % 20))}DEFFXXX`),
      instructions,
      Array.from({ length: batchSize }, () => randomUUID()),
      [],
      ['EUR', 'EUR'],
    ]);
    expect(plan.some((n) => n['Relation Name'] === 'transfers')).toBe(true);
    expect(wholeTableWork(plan)).toEqual([]);
  });

  test('the write finds the transfers it finalizes by key', async () => {
    const finalized: TransferRow[] = Array.from({ length: batchSize }, (_, i) => ({
      debtorAgent: 'PLNADEFFXXX',
      instructionId: `plan-${i * 20 + 20}`,
      endToEndId: 'e',
      uetr: randomUUID(),
      creditorAgent: 'PLNBDEFFXXX',
      intermediaryAgent: '',
      currency: 'EUR',
      amountMinor: 1n,
      debtorName: 'n',
      debtorIban: 'i',
      creditorName: 'n',
      creditorIban: 'i',
      remittanceInformation: '',
      requestDigest: Buffer.alloc(1),
      status: 'SETTLED',
      reasonCode: '',
      reason: '',
      receivedAt: new Date(),
      reservedAt: new Date(),
      finalAt: new Date(),
      expireAt: null,
      traceId: '',
      creditorSequence: null,
      batchId: 2n,
    }));
    const writes: BatchWrites = {
      operations: finalized.length,
      transfers: [],
      finalizedTransfers: finalized,
      positions: [{ bic: 'PLNADEFFXXX', currency: 'EUR', balanceMinor: 1n, reservedMinor: 0n, debitCapMinor: 0n, updatedAt: new Date() }],
      participantSequences: [{ bic: 'PLNADEFFXXX', confirmationSequence: 1n, inboundSequence: 0n }],
      journal: [],
      positionOperations: [],
      confirmations: [],
      notifications: [],
    };
    const { text, values } = writeBatch(2n, { nodeId: 'plan-test', notificationSource: 'plan-test' }, writes, new Date());
    const plan = await settlementPlan('plan_write', text, values);
    expect(plan.some((n) => n['Relation Name'] === 'transfers')).toBe(true);
    expect(wholeTableWork(plan)).toEqual([]);
  });
});
