// The node's pool outlives a connection that fails while idle in it (a
// Postgres restart, a failover, an operator's pg_terminate_backend): it hears
// of it, drops it and connects anew. Without its 'error' listener the pool's
// 'error' event would end the process (CI once failed on exactly that).
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { createPool, nodePlanCacheMode } from './database.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

test('an idle connection terminated by the server is reported and replaced; the pool carries on', async () => {
  const heard: Error[] = [];
  const pool = createPool(db.url, 1, (error) => void heard.push(error));
  try {
    const { rows } = await pool.query('SELECT pg_backend_pid() AS pid');
    const first = rows[0].pid as number;
    // The connection is idle in the pool now; end its backend as an operator would.
    const ended = await db.pool.query('SELECT pg_terminate_backend($1) AS ended', [first]);
    expect(ended.rows[0].ended).toBe(true);
    const deadline = Date.now() + 5_000;
    while (heard.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(heard.map((e) => (e as { code?: string }).code)).toEqual(['57P01']); // admin_shutdown
    const again = await pool.query('SELECT pg_backend_pid() AS pid');
    expect(again.rows[0].pid).not.toBe(first);
  } finally {
    await pool.end();
  }
});

test("the node's statements are planned for the tables as they are, not by a plan cached while they were empty", async () => {
  const pool = createPool(db.url, 1, () => {});
  try {
    const client = await pool.connect();
    try {
      expect((await client.query('SHOW plan_cache_mode')).rows[0].plan_cache_mode).toBe(nodePlanCacheMode);
      // The expiry sweep, run more than five times while the table is empty (as on a fresh database) ...
      await client.query(
        `PREPARE due (int) AS SELECT instruction_id FROM transfers WHERE status = 'RESERVED' AND expire_at <= now() ORDER BY expire_at LIMIT $1`,
      );
      for (let run = 0; run < 6; run++) await client.query('EXECUTE due (10)');
      // ... then 20,000 settled transfers arrive, before autovacuum's first ANALYZE.
      await db.pool.query(
        `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
           debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, final_at, batch_id)
         SELECT 'PLNADEFFXXX', 'plan-' || i, 'e2e-' || i, gen_random_uuid(), 'PLNBDEFFXXX', 'EUR', 1, 'n', 'i', 'n', 'i',
                '\\x00', 'SETTLED', now(), now(), 1
           FROM generate_series(1, 20000) i`,
      );
      const { rows } = await client.query('EXPLAIN (FORMAT JSON) EXECUTE due (10)');
      const plan = JSON.stringify(rows[0]['QUERY PLAN']);
      // A generic plan cached while the table was empty reads every transfer (a Seq Scan).
      expect(plan).not.toContain('Seq Scan');
      expect(plan).toContain('transfers_reserved_expire_idx');
    } finally {
      client.release();
    }
  } finally {
    await pool.end();
  }
});
