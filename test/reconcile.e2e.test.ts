// Reconcile finds what is wrong, and the database refuses what must never
// happen: an edited journal, a changed final transfer, a negative position.
import { afterAll, beforeAll, expect, test } from 'vitest';
import type pg from 'pg';
import { openTestPool } from './support/database.js';
import { createBank, transfer } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';

let t: TestNode;
let db: pg.Pool;

beforeAll(async () => {
  t = await startTestNode();
  db = openTestPool(t.databaseUrl, 1);
  await createBank(t.operator, 'RECADEFFXXX', 1_000n);
  await createBank(t.operator, 'RECBFRPPXXX');
  await t.participant('RECADEFFXXX').submitTransfer({ transfer: transfer('RECADEFFXXX', 'RECBFRPPXXX', 100n), waitForFinal: false });
});
afterAll(async () => {
  await db?.end();
  await t?.stop();
});

test('the journal is append-only and final transfers are immutable', async () => {
  await expect(db.query(`UPDATE journal_entries SET amount_minor = amount_minor + 1`)).rejects.toThrow(/append-only/);
  await expect(db.query(`DELETE FROM journal_entries`)).rejects.toThrow(/append-only/);
  await expect(db.query(`TRUNCATE journal_entries`)).rejects.toThrow(/append-only/);
  await expect(db.query(`UPDATE transfers SET amount_minor = 1`)).rejects.toThrow(/final/);
  await expect(db.query(`DELETE FROM transfers`)).rejects.toThrow(/never deleted/);
  await expect(db.query(`UPDATE positions SET balance_minor = -1 WHERE bic = 'RECBFRPPXXX'`)).rejects.toThrow(/positions_available_not_negative/);
  expect((await t.operator.reconcile({})).clean).toBe(true);
});

test('Reconcile lists each broken invariant', async () => {
  // Tampering a Postgres superuser could do, behind the node's back.
  await db.query(`UPDATE positions SET balance_minor = balance_minor + 7 WHERE bic = 'RECBFRPPXXX'`);
  await db.query(
    `INSERT INTO journal_entries (batch_id, currency, debit_account, credit_account, amount_minor, transfer_debtor_agent, transfer_instruction_id, created_at)
     VALUES (0, 'EUR', 'RECADEFFXXX', 'RECBFRPPXXX', 5, 'RECADEFFXXX', 'forged', now())`,
  );
  const r = await t.operator.reconcile({});
  expect(r.clean).toBe(false);
  expect(r.violations.map((v) => [v.invariant, v.bic]).sort()).toEqual(
    [
      ['BALANCES_NOT_CONSERVED', ''],
      ['JOURNAL_TRANSFERS_MISMATCH', ''],
      ['POSITION_JOURNAL_MISMATCH', 'RECADEFFXXX'],
      ['POSITION_JOURNAL_MISMATCH', 'RECBFRPPXXX'],
    ].sort(),
  );
  for (const v of r.violations) expect(v.detail).toMatch(/\d/);
});
