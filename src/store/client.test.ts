import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { queryInOrder, withClient } from './client.js';

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
});
