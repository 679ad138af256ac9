import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { queryInOrder, withClient } from './client.js';
import { createPool } from './database.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query('CREATE TABLE pipelined (id integer PRIMARY KEY)');
});
afterAll(async () => {
  await db?.drop();
});

describe('queryInOrder', () => {
  test('returns every result, in order', async () => {
    const results = await withClient(db.pool, (client) =>
      queryInOrder(client, ['BEGIN', { text: 'INSERT INTO pipelined VALUES ($1) RETURNING id', values: [1] }, 'SELECT count(*)::int AS n FROM pipelined', 'COMMIT']),
    );
    expect(results.map((r) => r.command)).toEqual(['BEGIN', 'INSERT', 'SELECT', 'COMMIT']);
    expect(results[2]?.rows[0].n).toBe(1);
  });

  test('a failed statement throws its own error and the COMMIT queued after it commits nothing', async () => {
    const attempt = withClient(db.pool, (client) =>
      queryInOrder(client, [
        'BEGIN',
        { text: 'INSERT INTO pipelined VALUES ($1)', values: [2] },
        { text: 'INSERT INTO pipelined VALUES ($1)', values: [1] }, // duplicate key
        'COMMIT',
      ]),
    );
    await expect(attempt).rejects.toMatchObject({ code: '23505' });
    const left = await db.pool.query('SELECT id FROM pipelined ORDER BY id');
    expect(left.rows).toEqual([{ id: 1 }]);
    // The connection is usable afterwards (the COMMIT rolled the transaction back).
    await withClient(db.pool, async (client) => expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]));
  });

  test("on the node's pipelining pool, the queries leave in one socket write", async () => {
    const pool = createPool(db.url, 1, () => {});
    await withClient(pool, async (client) => {
      const stream = (client as unknown as { connection: { stream: { _write: unknown; _writev: unknown } } }).connection.stream;
      let writes = 0;
      for (const method of ['_write', '_writev'] as const) {
        const original = stream[method] as (...args: unknown[]) => unknown;
        stream[method] = function (this: unknown, ...args: unknown[]) {
          writes += 1;
          return original.apply(this, args);
        };
      }
      try {
        await queryInOrder(client, [
          'BEGIN',
          { name: 'pipelined_count', text: 'SELECT count(*)::int AS n FROM pipelined WHERE id > $1', values: [0] },
          { text: 'SELECT $1::int AS one', values: [1] },
          'COMMIT',
        ]);
      } finally {
        delete (stream as Record<string, unknown>)['_write'];
        delete (stream as Record<string, unknown>)['_writev'];
      }
      expect(writes).toBe(1);
    }).finally(() => pool.end());
  });
});
