// Retention purges each participant's oldest run of confirmations past the
// retention period, by primary key, in bounded statements and sweeps, one
// node at a time.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { purgeConfirmations, retentionAdvisoryLockKey } from './retention.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const day = 86_400;
const old = () => new Date(Date.now() - 2 * day * 1_000);
const young = () => new Date();

/** A participant whose confirmations 1, 2, 3… became final at the given times. */
async function participantWith(bic: string, finalTimes: Date[]): Promise<void> {
  await db.pool.query(`INSERT INTO participants (bic, name, kind, status, acceptance_mode) VALUES ($1, 'Bank', 'BANK', 'ACTIVE', 'AUTOMATIC')`, [bic]);
  await db.pool.query(
    `INSERT INTO confirmations (bic, sequence, debtor_agent, instruction_id, role, status, final_at, batch_id)
     SELECT $1, s, $1, 'ret-' || s, 'DEBTOR', 'SETTLED', f, 1 FROM unnest($2::timestamptz[]) WITH ORDINALITY AS u(f, s)`,
    [bic, finalTimes],
  );
}

async function kept(bic: string): Promise<{ sequences: number[]; purgedThrough: number }> {
  const rows = await db.pool.query(`SELECT sequence::int AS s FROM confirmations WHERE bic = $1 ORDER BY sequence`, [bic]);
  const mark = await db.pool.query(`SELECT confirmations_purged_through::int AS p FROM participants WHERE bic = $1`, [bic]);
  return { sequences: rows.rows.map((r) => r.s as number), purgedThrough: mark.rows[0].p as number };
}

describe('purgeConfirmations', () => {
  test('purges the oldest run only, up to the first confirmation still kept', async () => {
    // 4 is past retention but follows a younger 3 (another node's clock, say): it stays with it.
    await participantWith('RETADEFFXXX', [old(), old(), young(), old(), young()]);
    await participantWith('RETBDEFFXXX', [young(), young()]);
    expect(await purgeConfirmations(db.pool, day, 100, 10)).toEqual({ deleted: 2, skipped: false });
    expect(await kept('RETADEFFXXX')).toEqual({ sequences: [3, 4, 5], purgedThrough: 2 });
    expect(await kept('RETBDEFFXXX')).toEqual({ sequences: [1, 2], purgedThrough: 0 });
    // Nothing more is past retention at the head of either.
    expect(await purgeConfirmations(db.pool, day, 100, 10)).toEqual({ deleted: 0, skipped: false });
  });

  test('deletes at most chunk × chunks per sweep, the rest in the next sweeps', async () => {
    await participantWith('RETCDEFFXXX', [old(), old(), old(), old(), old(), young()]);
    await participantWith('RETDDEFFXXX', [old(), old(), old()]);
    expect(await purgeConfirmations(db.pool, day, 2, 2)).toEqual({ deleted: 4, skipped: false });
    expect(await kept('RETCDEFFXXX')).toEqual({ sequences: [5, 6], purgedThrough: 4 });
    expect(await kept('RETDDEFFXXX')).toEqual({ sequences: [1, 2, 3], purgedThrough: 0 });
    expect(await purgeConfirmations(db.pool, day, 2, 2)).toEqual({ deleted: 1 + 2, skipped: false });
    expect(await kept('RETCDEFFXXX')).toEqual({ sequences: [6], purgedThrough: 5 });
    expect(await kept('RETDDEFFXXX')).toEqual({ sequences: [3], purgedThrough: 2 });
    expect(await purgeConfirmations(db.pool, day, 2, 2)).toEqual({ deleted: 1, skipped: false });
    expect(await kept('RETDDEFFXXX')).toEqual({ sequences: [], purgedThrough: 3 });
  });

  test('skips its turn while another node purges, and lets go of the lock after its sweep', async () => {
    await participantWith('RETEDEFFXXX', [old(), young()]);
    const key = retentionAdvisoryLockKey.toString();
    // Another node's connection: checked out for the whole test, so never the one the sweeps run on.
    const other = await db.pool.connect();
    try {
      await other.query('SELECT pg_advisory_lock($1::bigint)', [key]);
      expect(await purgeConfirmations(db.pool, day, 100, 10)).toEqual({ deleted: 0, skipped: true });
      expect(await kept('RETEDEFFXXX')).toEqual({ sequences: [1, 2], purgedThrough: 0 });
      await other.query('SELECT pg_advisory_unlock($1::bigint)', [key]);

      expect((await purgeConfirmations(db.pool, day, 100, 10)).skipped).toBe(false);
      expect(await kept('RETEDEFFXXX')).toEqual({ sequences: [2], purgedThrough: 1 });
      // The sweep's pooled connection no longer holds the lock.
      expect((await other.query('SELECT pg_try_advisory_lock($1::bigint) AS held', [key])).rows[0].held).toBe(true);
      await other.query('SELECT pg_advisory_unlock($1::bigint)', [key]);
    } finally {
      other.release();
    }
  });
});
