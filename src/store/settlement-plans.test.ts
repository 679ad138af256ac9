// The settlement statements must stay probes by key however the tables grow.
// Here the statements are first prepared and planned while the tables are
// empty, as on a freshly migrated database; then 60,000 transfers arrive with
// no ANALYZE, and each statement, run as runSettlementBatch runs it, must
// still probe `transfers` by its keys. Measured before: a hash join over a
// whole-table scan; in a generic plan cached while the table was empty, a
// scan of the table per key (2.6 s per 1,000-transfer read at 30,000 rows),
// or a probe of transfers_received_idx on its second and third columns.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
// @ts-expect-error node-postgres' parameter encoding has no type declarations
import { prepareValue } from 'pg/lib/utils.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { beginSettlementSql, readSnapshotSql, writeBatch } from './settlement.js';
import { confirmationEventsSql } from './reads.js';
import { participantsToPurgeSql, purgeConfirmationsSql } from './retention.js';
import type { BatchWrites, TransferRow } from './rows.js';

let db: TestDatabase;
/** One connection, like one of the node's pooled ones: its cached plans are what is checked. */
let connection: pg.Client;
const transfersStored = 60_000;
const batchSize = 1_000;

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Cond'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/** The statement's own parameter types, for PREPARE. */
function parameterTypes(text: string): string[] {
  const types: string[] = [];
  for (const match of text.matchAll(/\$(\d+)::([a-z]+(?:\[\])?)/g)) types[Number(match[1]) - 1] = match[2] as string;
  return types;
}

const preparedTypes = new Map<string, string[]>();

async function prepare(name: string, text: string): Promise<void> {
  preparedTypes.set(name, parameterTypes(text));
  await connection.query(`PREPARE ${name} (${parameterTypes(text).join(', ')}) AS ${text}`);
}

/**
 * EXPLAIN EXECUTE inside a settlement transaction (rolled back), or in a plain
 * one with the given plan cache mode, as the node's other queries run.
 */
async function explain(name: string, values: unknown[], planCacheMode?: 'force_custom_plan' | 'force_generic_plan'): Promise<PlanNode[]> {
  await connection.query(planCacheMode === undefined ? beginSettlementSql : `BEGIN; SET LOCAL plan_cache_mode = ${planCacheMode}`);
  try {
    // EXECUTE takes no bind parameters: literals, encoded as node-postgres encodes
    // parameters; an array sent in binary (binary-arrays.ts) as Postgres prints it.
    const types = preparedTypes.get(name) ?? [];
    const literals: string[] = [];
    for (const [i, v] of values.entries()) {
      const type = types[i] as string;
      const text = Buffer.isBuffer(v) && type.endsWith('[]')
        ? ((await connection.query<{ t: string }>({ text: `SELECT $1::${type}::text AS t`, values: [v] })).rows[0]?.t as string)
        : String(prepareValue(v));
      literals.push(`${connection.escapeLiteral(text)}::${type}`);
    }
    const args = literals.join(', ');
    const result = await connection.query(`EXPLAIN (FORMAT JSON) EXECUTE ${name} (${args})`);
    return nodes((result.rows[0] as { 'QUERY PLAN': [{ Plan: PlanNode }] })['QUERY PLAN'][0].Plan);
  } finally {
    await connection.query('ROLLBACK');
  }
}

/** Indexes that find transfers by the keys a batch has. */
const keyIndexes = ['transfers_pkey', 'transfers_uetr_key'];

/**
 * Anything that reads a whole table, or reaches `transfers` (the table that
 * grows) other than through one of its key indexes with a condition. The small
 * participants and positions tables may be read whole.
 */
const wholeTableWork = (plan: PlanNode[]) =>
  plan
    .filter((n) => {
      if (n['Node Type'] === 'Seq Scan' || n['Node Type'] === 'Hash Join' || n['Node Type'] === 'Merge Join') return true;
      const onTransfers = n['Relation Name'] === 'transfers' || (n['Index Name'] ?? '').startsWith('transfers');
      if (!onTransfers || !['Index Scan', 'Index Only Scan', 'Bitmap Index Scan'].includes(n['Node Type'])) return false;
      return n['Index Cond'] === undefined || !keyIndexes.includes(n['Index Name'] ?? '');
    })
    .map((n) => `${n['Node Type']} on ${n['Index Name'] ?? n['Relation Name'] ?? '?'}`);

const bic = (i: number) => `PLN${String.fromCharCode(65 + (i % 20))}DEFFXXX`;

function readValues(): unknown[] {
  const instructions = Array.from({ length: batchSize }, (_, i) => i * 37 + 1);
  return [
    [bic(0), bic(1)],
    instructions.map(bic),
    instructions.map((i) => `plan-${i}`),
    Array.from({ length: batchSize }, () => randomUUID()),
    [],
    ['EUR', 'EUR'],
  ];
}

function transferRow(i: number): TransferRow {
  return {
    debtorAgent: bic(i),
    instructionId: `plan-${i}`,
    endToEndId: 'e',
    uetr: randomUUID(),
    creditorAgent: bic(i + 1),
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
  };
}

const noSequences = (count: number) => ({
  debtor: new Array<bigint | null>(count).fill(null),
  creditor: new Array<bigint | null>(count).fill(null),
  intermediary: new Array<bigint | null>(count).fill(null),
});

function writes(kind: 'new' | 'finalizing'): BatchWrites {
  const rows = Array.from({ length: batchSize }, (_, i) => transferRow(transfersStored + 1 + i * 20));
  return {
    operations: rows.length,
    transfers: kind === 'new' ? rows : [],
    finalizedTransfers: kind === 'finalizing' ? rows : [],
    positions: [{ bic: bic(0), currency: 'EUR', balanceMinor: 1n, reservedMinor: 0n, debitCapMinor: 0n, updatedAt: new Date() }],
    participantSequences: [{ bic: bic(0), confirmationSequence: 1n, inboundSequence: 0n }],
    // Settled transfers are booked (writeBatch derives those entries from the transfers).
    journal: rows.map((t) => ({
      currency: t.currency,
      debitAccount: t.debtorAgent,
      creditAccount: t.creditorAgent,
      amountMinor: t.amountMinor,
      transferDebtorAgent: t.debtorAgent,
      transferInstructionId: t.instructionId,
      positionRequestId: null,
    })),
    positionOperations: [],
    confirmations: [],
    // No confirmations (the statement's plan is what is checked): every sequence number null.
    transferConfirmations: noSequences(kind === 'new' ? rows.length : 0),
    finalizedConfirmations: noSequences(kind === 'finalizing' ? rows.length : 0),
    notifications: [],
  };
}

/**
 * Nodes that name a table but find its rows through another node: a DELETE's
 * ModifyTable, a Bitmap Heap Scan under its Bitmap Index Scan.
 */
const indexDriven = (n: PlanNode) => n['Node Type'] === 'ModifyTable' || n['Node Type'] === 'Bitmap Heap Scan';

/** The transfer whose lifecycle InspectTransfer reads. */
const inspectedValues = (): unknown[] => [bic(0), 'plan-40000'];

const origin = { nodeId: 'plan-test', notificationSource: 'plan-test' };
const newWrite = writeBatch(2n, origin, writes('new'), new Date());
const finalizingWrite = writeBatch(2n, origin, writes('finalizing'), new Date());

beforeAll(async () => {
  db = await createTestDatabase();
  connection = new pg.Client({ connectionString: db.url });
  await connection.connect();
  // Prepared, and planned once, while every table is empty.
  await prepare('plan_read', readSnapshotSql);
  await prepare('plan_write_new', newWrite.text);
  await prepare('plan_write_finalizing', finalizingWrite.text);
  await prepare('plan_events', confirmationEventsSql);
  await prepare('plan_purge', purgeConfirmationsSql);
  await prepare('plan_purge_participants', participantsToPurgeSql);
  await explain('plan_read', readValues());
  await explain('plan_write_new', newWrite.values);
  await explain('plan_write_finalizing', finalizingWrite.values);
  // Then the tables fill up, with no ANALYZE: the statistics still say empty.
  await db.pool.query(`
    INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
    SELECT 'PLN' || chr(65 + i) || 'DEFFXXX', 'Plan bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}' FROM generate_series(0, 19) i;
    INSERT INTO positions (bic, currency, balance_minor) SELECT bic, 'EUR', 1000000000 FROM participants;`);
  await db.pool.query(
    `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
       debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, final_at, batch_id,
       creditor_confirmation)
     SELECT 'PLN' || chr(65 + i % 20) || 'DEFFXXX', 'plan-' || i, 'e2e-' || i, gen_random_uuid(),
            'PLN' || chr(65 + (i + 1) % 20) || 'DEFFXXX', 'EUR', 1 + i % 1000, 'n', 'i', 'n', 'i',
            '\\x00', 'SETTLED', now(), now(), 1, i
       FROM generate_series(1, $1) i`,
    [transfersStored],
  );
  await db.pool.query(
    `INSERT INTO confirmations (bic, sequence, debtor_agent, instruction_id, role, status, final_at, batch_id)
     SELECT 'PLN' || chr(65 + (i + 1) % 20) || 'DEFFXXX', i, 'PLN' || chr(65 + i % 20) || 'DEFFXXX', 'plan-' || i, 'CREDITOR', 'SETTLED', now(), 1
       FROM generate_series(1, $1) i`,
    [transfersStored],
  );
  // One delivered range per confirmation, as pages of one confirmation each would leave.
  await db.pool.query(
    `INSERT INTO confirmation_deliveries (bic, first_sequence, last_sequence, delivered_at)
     SELECT 'PLN' || chr(65 + i % 20) || 'DEFFXXX', i, i, now() FROM generate_series(1, $1) i`,
    [transfersStored],
  );
}, 60_000);
afterAll(async () => {
  await connection?.end();
  await db?.drop();
});

describe('settlement statements on 60,000 transfers whose statistics say the table is empty', () => {
  test('the snapshot read probes transfers by key', async () => {
    const plan = await explain('plan_read', readValues());
    expect(plan.some((n) => n['Relation Name'] === 'transfers')).toBe(true);
    expect(wholeTableWork(plan)).toEqual([]);
  });

  test('the write of new transfers reads no table whole', async () => {
    expect(wholeTableWork(await explain('plan_write_new', newWrite.values))).toEqual([]);
  });

  test('the write that finalizes transfers finds them by key, not among all reserved ones', async () => {
    const plan = await explain('plan_write_finalizing', finalizingWrite.values);
    expect(plan.some((n) => n['Relation Name'] === 'transfers')).toBe(true);
    expect(wholeTableWork(plan)).toEqual([]);
  });

  test('a transfer\'s delivery times are found by key', async () => {
    // Sent unnamed, so planned for each call: a custom plan (a generic one
    // cached while the table was empty scans confirmation_deliveries whole).
    const plan = await explain('plan_events', inspectedValues(), 'force_custom_plan');
    expect(plan.filter((n) => n['Node Type'] === 'Seq Scan' || n['Node Type'] === 'Hash Join' || n['Node Type'] === 'Merge Join')).toEqual([]);
    const probes = plan.filter((n) => ['Index Scan', 'Index Only Scan', 'Bitmap Index Scan'].includes(n['Node Type']));
    // The transfer by its key, its confirmations by theirs, their delivered ranges by bic and a bounded run of first sequences.
    expect(probes.map((n) => n['Index Name']).sort()).toEqual(['confirmation_deliveries_start_idx', 'confirmations_pkey', 'transfers_pkey']);
    for (const probe of probes) expect(probe['Index Cond']).toBeDefined();
    expect(probes.find((n) => n['Index Name'] === 'confirmation_deliveries_start_idx')?.['Index Cond']).toMatch(/first_sequence >= /);
  });

  test('retention finds the delivered ranges it forgets by key', async () => {
    // Run as a settlement batch runs (a plain custom plan was a hash join over a seq scan of it).
    const plan = await explain('plan_purge', [bic(1), 86_400, 1_000]);
    // How the DELETE finds its rows (its ModifyTable node names the table too).
    const onDeliveries = plan.filter((n) => !indexDriven(n) && (n['Relation Name'] === 'confirmation_deliveries' || (n['Index Name'] ?? '').startsWith('confirmation_deliveries')));
    expect(onDeliveries.length).toBeGreaterThan(0);
    expect(onDeliveries.filter((n) => n['Index Name'] !== 'confirmation_deliveries_start_idx' || n['Index Cond'] === undefined)).toEqual([]);
    expect(plan.filter((n) => n['Node Type'] === 'Seq Scan' && n['Relation Name'] !== 'participants')).toEqual([]);
  });

  test('retention walks confirmations by primary key, oldest first', async () => {
    const purge = await explain('plan_purge', [bic(1), 86_400, 1_000]);
    const onConfirmations = purge.filter((n) => !indexDriven(n) && (n['Relation Name'] === 'confirmations' || (n['Index Name'] ?? '').startsWith('confirmations')));
    expect(onConfirmations.length).toBeGreaterThan(0);
    expect(onConfirmations.filter((n) => n['Index Name'] !== 'confirmations_pkey' || n['Index Cond'] === undefined)).toEqual([]);
    // Which participants have confirmations past retention: their oldest, one probe each.
    const participants = await explain('plan_purge_participants', [86_400]);
    const probes = participants.filter((n) => n['Relation Name'] === 'confirmations' || (n['Index Name'] ?? '').startsWith('confirmations'));
    expect(probes.length).toBeGreaterThan(0);
    expect(probes.filter((n) => n['Index Name'] !== 'confirmations_pkey' || n['Index Cond'] === undefined)).toEqual([]);
  });

  test('each shape of write is its own prepared statement', () => {
    expect(newWrite.name).not.toBe(finalizingWrite.name);
    expect(writeBatch(3n, origin, writes('new'), new Date()).name).toBe(newWrite.name);
  });
});
