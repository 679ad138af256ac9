// Batch ids for batches decided ahead without a read: taken from the sequence
// a block at a time, each handed out once, one fetch shared by the batches
// waiting for it, and a failed fetch failing only the batch that made it.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { BatchIds, batchIdsPerFetch } from './settlement.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

/** The last id the sequence handed out (0 before the first). */
async function lastValue(): Promise<bigint> {
  const { rows } = await db.pool.query(`SELECT last_value::text AS v, is_called FROM settlement_batch_id_seq`);
  return BigInt(rows[0].v) - (rows[0].is_called ? 0n : 1n);
}

async function withTwoClients(run: (a: pg.PoolClient, b: pg.PoolClient) => Promise<void>): Promise<void> {
  const a = await db.pool.connect();
  const b = await db.pool.connect();
  try {
    await run(a, b);
  } finally {
    a.release(true);
    b.release(true);
  }
}

describe('BatchIds', () => {
  test('hands each id out once, a block per fetch, and the batches waiting share one fetch', async () => {
    await withTwoClients(async (a, b) => {
      const ids = new BatchIds();
      const before = await lastValue();
      // Two batches at once with nothing fetched: one block between them.
      const first = await Promise.all([ids.next(a), ids.next(b)]);
      expect(await lastValue()).toBe(before + BigInt(batchIdsPerFetch));
      const rest: bigint[] = [];
      for (let i = 0; i < batchIdsPerFetch * 2; i++) rest.push(await ids.next(i % 2 === 0 ? a : b));
      const all = [...first, ...rest];
      expect(new Set(all).size).toBe(all.length);
      expect(await lastValue()).toBe(before + BigInt(3 * batchIdsPerFetch));
      for (const id of all) expect(id > before && id <= before + BigInt(3 * batchIdsPerFetch)).toBe(true);
    });
  });

  test('a fetch that fails fails its own batch; one waiting for it fetches on its own connection', async () => {
    await withTwoClients(async (a, b) => {
      const ids = new BatchIds();
      const pid = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      a.on('error', () => undefined); // the terminated connection reports its end
      await db.pool.query('SELECT pg_terminate_backend($1)', [pid]);
      const failing = ids.next(a);
      const waiting = ids.next(b);
      await expect(failing).rejects.toThrow();
      expect(typeof (await waiting)).toBe('bigint');
    });
  });
});
