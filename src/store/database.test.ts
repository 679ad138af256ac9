// The node's pool outlives a connection that fails while idle in it (a
// Postgres restart, a failover, an operator's pg_terminate_backend): it hears
// of it, drops it and connects anew. Without its 'error' listener the pool's
// 'error' event would end the process (CI once failed on exactly that).
import { afterAll, beforeAll, expect, test } from 'vitest';
import type pg from 'pg';
import { createTestDatabase, openTestPool, type TestDatabase } from '../../test/support/database.js';
import { createPool, endPool, nodePlanCacheMode } from './database.js';
import { selectDueReservations } from './reads.js';

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

test('endPool returns once every connection has closed, so the server can stop right after with nothing failing', async () => {
  const heard: Error[] = [];
  const pool = createPool(db.url, 4, (error) => void heard.push(error));
  // Four connections at once, all idle in the pool afterwards.
  const clients = await Promise.all([1, 2, 3, 4].map(() => pool.connect()));
  let closed = 0;
  pool.on('remove', () => void (closed += 1));
  // One is already closing when endPool is called (released with an error: pg-pool
  // destroys it), three wait idle in the pool.
  (clients[0] as pg.PoolClient).release(new Error('discarded by the test'));
  for (const client of clients.slice(1)) client.release();
  expect(pool.idleCount).toBe(3);
  await endPool(pool);
  // pool.end() alone resolves before its connections have closed; a server
  // stopped then ends them itself, and each is reported as failed.
  expect(closed).toBe(4);
  expect(heard).toEqual([]);
});

test("the node's statements are planned for the tables as they are, not by a plan cached while they were empty", async () => {
  // Autovacuum's ANALYZE would replan both; this checks the time before it.
  await db.pool.query('ALTER TABLE transfers SET (autovacuum_enabled = off)');
  const node = createPool(db.url, 1, () => {});
  // A control with Postgres' default (auto): the scenario must be one in which a cached plan goes wrong.
  const control = openTestPool(db.url, 1);
  try {
    expect((await node.query('SHOW plan_cache_mode')).rows[0].plan_cache_mode).toBe(nodePlanCacheMode);
    // The expiry sweep, run more than five times while the table is empty (as on a fresh database) ...
    for (let run = 0; run < 6; run++) {
      expect(await selectDueReservations(node, 10)).toEqual([]);
      expect(await selectDueReservations(control, 10)).toEqual([]);
    }
    // ... then 20,000 settled transfers arrive, before any ANALYZE.
    await db.pool.query(
      `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
         debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, final_at, batch_id)
       SELECT 'PLNADEFFXXX', 'plan-' || i, 'e2e-' || i, gen_random_uuid(), 'PLNBDEFFXXX', 'EUR', 1, 'n', 'i', 'n', 'i',
              '\\x00', 'SETTLED', now(), now(), 1
         FROM generate_series(1, 20000) i`,
    );
    // The statement the sweep prepared (by name, on the pool's one connection), as it would run next.
    const planOf = async (pool: pg.Pool) =>
      JSON.stringify((await pool.query('EXPLAIN (FORMAT JSON) EXECUTE transfers_due_reservations (10)')).rows[0]['QUERY PLAN']);
    expect(await planOf(control)).toContain('Seq Scan');
    const plan = await planOf(node);
    expect(plan).not.toContain('Seq Scan');
    expect(plan).toContain('transfers_reserved_expire_idx');
  } finally {
    await Promise.all([node.end(), control.end()]);
  }
});

test('startup options from DATABASE_URL are kept beside the plan cache mode', async () => {
  const url = new URL(db.url);
  url.searchParams.set('options', '-c search_path=public,pg_catalog');
  const pool = createPool(url.toString(), 1, () => {});
  try {
    const { rows } = await pool.query(`SELECT current_setting('search_path') AS path, current_setting('plan_cache_mode') AS mode`);
    expect(rows).toEqual([{ path: 'public,pg_catalog', mode: nodePlanCacheMode }]);
  } finally {
    await pool.end();
  }
});
