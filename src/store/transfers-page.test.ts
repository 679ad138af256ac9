// ListTransfers pages through transfers newest first by (received_at,
// debtor_agent, instruction_id). Since migration 0005 the only index for it is
// received_at alone: each page must still start in that index at its key's
// receipt time (an index condition, not a filter over the whole index) and
// read a page plus the rest of the receipt times it touches, whether or not
// the table has statistics, and return exactly the rows the ordering says.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { createPool } from './database.js';
import { selectTransfersPage, transfersPageSql } from './reads.js';
import type pg from 'pg';

let db: TestDatabase;
/** A connection configured as the node's are (custom plans). */
let node: pg.Pool;
const transfersStored = 60_000;
/** Transfers per receipt time: a SubmitTransfers call's transfers all share one (1,000 at most by default). */
const transfersPerReceiptTime = 1_000;
const pageSize = 100;

beforeAll(async () => {
  db = await createTestDatabase();
  node = createPool(db.url, 1, () => undefined);
  await db.pool.query(`
    INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
    SELECT 'PGE' || chr(65 + i) || 'DEFFXXX', 'Page bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}' FROM generate_series(0, 19) i`);
  await db.pool.query(
    `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
       debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, final_at, batch_id)
     SELECT 'PGE' || chr(65 + (i / $2) % 20) || 'DEFFXXX', 'page-' || i, 'e2e-' || i, gen_random_uuid(),
            'PGE' || chr(65 + (i / $2 + 1) % 20) || 'DEFFXXX', 'EUR', 1, 'n', 'i', 'n', 'i', '\\x00', 'SETTLED',
            timestamptz '2026-11-01T00:00:00Z' + (i / $2) * interval '1 second', now(), 1
       FROM generate_series(1, $1) i`,
    [transfersStored, transfersPerReceiptTime],
  );
}, 60_000);
afterAll(async () => {
  await node?.end();
  await db?.drop();
});

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Index Cond'?: string;
  'Actual Rows'?: number;
  'Rows Removed by Filter'?: number;
  Plans?: PlanNode[];
}
const nodes = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(nodes)];

/** The page query selectTransfersPage sends, explained with ANALYZE on the node's kind of connection. */
async function pagePlan(after: { receivedAt: Date; debtorAgent: string; instructionId: string } | undefined): Promise<PlanNode[]> {
  const { rows } = await node.query({
    name: 'explain_page',
    // Planned for its values, as the node's connections plan every statement (custom plans).
    text: `EXPLAIN (ANALYZE, FORMAT JSON) ${transfersPageSql}`,
    values: ['', '', after?.receivedAt ?? null, after?.debtorAgent ?? '', after?.instructionId ?? '', pageSize],
  });
  return nodes((rows[0] as { 'QUERY PLAN': [{ Plan: PlanNode }] })['QUERY PLAN'][0].Plan);
}

describe.each([
  ['without statistics', false],
  ['after ANALYZE', true],
])('a page of transfers, newest first, %s', (_name, analyzed) => {
  beforeAll(async () => {
    if (analyzed) await db.pool.query('ANALYZE transfers');
  });

  test('starts in the receipt-time index at its key and reads a page and the rest of its receipt times', async () => {
    // A key in the middle of a receipt time's transfers: the rows of that time after it are read and dropped.
    const groupStart = 30 * transfersPerReceiptTime;
    const { rows } = await db.pool.query<{ received_at: Date; debtor_agent: string; instruction_id: string }>(
      `SELECT received_at, debtor_agent, instruction_id FROM transfers WHERE instruction_id = $1`,
      [`page-${groupStart + transfersPerReceiptTime / 2}`],
    );
    const key = rows[0];
    expect(key).toBeDefined();
    for (const after of [undefined, { receivedAt: key!.received_at, debtorAgent: key!.debtor_agent, instructionId: key!.instruction_id }]) {
      const plan = await pagePlan(after);
      expect(plan.map((n) => n['Node Type'])).not.toContain('Seq Scan');
      const scan = plan.find((n) => n['Index Name'] === 'transfers_received_at_idx');
      expect(scan, JSON.stringify(plan.map((n) => n['Node Type']))).toBeDefined();
      // Started at the key's receipt time by the index, not by filtering the whole index.
      if (after !== undefined) expect(scan?.['Index Cond']).toMatch(/received_at/);
      const read = (scan?.['Actual Rows'] ?? 0) + (scan?.['Rows Removed by Filter'] ?? 0);
      expect(read).toBeLessThanOrEqual(pageSize + 2 * transfersPerReceiptTime);
    }
  });

  test('pages join up: each starts right after the last row of the one before, in the listing order', async () => {
    const { rows: expected } = await db.pool.query<{ id: string }>(
      `SELECT instruction_id AS id FROM transfers ORDER BY received_at DESC, debtor_agent DESC, instruction_id DESC LIMIT $1`,
      [pageSize * 5],
    );
    const seen: string[] = [];
    let after: { receivedAt: Date; debtorAgent: string; instructionId: string } | undefined;
    for (let page = 0; page < 5; page++) {
      const rows = await selectTransfersPage(node, { bic: '', status: '' }, after, pageSize);
      seen.push(...rows.map((r) => r.instructionId));
      const last = rows[rows.length - 1];
      if (last === undefined) break;
      after = { receivedAt: last.receivedAt, debtorAgent: last.debtorAgent, instructionId: last.instructionId };
    }
    expect(seen).toEqual(expected.map((r) => r.id));
  });
});
