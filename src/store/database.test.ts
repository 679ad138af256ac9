// The node's pool outlives a connection that fails while idle in it (a
// Postgres restart, a failover, an operator's pg_terminate_backend): it hears
// of it, drops it and connects anew. Without its 'error' listener the pool's
// 'error' event would end the process (CI once failed on exactly that).
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { createPool } from './database.js';

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
