// Delivery marks in the database: one row per delivered stream page; a
// confirmation was delivered at the earliest range that holds it; retention
// forgets the ranges with their confirmations; marks in the old column
// (written before migration 0002, or by nodes of the previous version) still count;
// migration 0004 gives each transfer its confirmations' numbers.
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createBareDatabase, createTestDatabase, openTestPool, type TestDatabase } from '../../test/support/database.js';
import { migrate } from './migrate.js';
import { deliveredRangeSequencesMax, insertConfirmationDeliveries, selectConfirmationEvents } from './reads.js';
import { purgeConfirmations } from './retention.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const at = (seconds: number) => new Date(Date.UTC(2026, 10, 27, 9, 0, seconds));

type Role = 'DEBTOR' | 'CREDITOR' | 'INTERMEDIARY';

/**
 * A settled transfer (debtor, instruction) and its confirmations, numbered as
 * given; `numbered` false leaves the transfer without their sequence numbers,
 * as a database before migration 0004 has it.
 */
async function settledTransfer(
  pool: pg.Pool,
  debtor: string,
  instruction: string,
  confirmations: Partial<Record<Role, { bic: string; sequence: number }>>,
  finalAt = new Date(),
  numbered = true,
) {
  const creditor = confirmations.CREDITOR?.bic ?? 'DLVZDEFFXXX';
  const intermediary = confirmations.INTERMEDIARY?.bic ?? '';
  const sequences = numbered ? [confirmations.DEBTOR?.sequence ?? null, confirmations.CREDITOR?.sequence ?? null, confirmations.INTERMEDIARY?.sequence ?? null] : [];
  await pool.query(
    `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, intermediary_agent, currency,
       amount_minor, debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, final_at, batch_id
       ${numbered ? ', debtor_confirmation, creditor_confirmation, intermediary_confirmation' : ''})
     VALUES ($1, $2, $2, gen_random_uuid(), $3, $4, 'EUR', 1, 'n', 'i', 'n', 'i', '\\x00', 'SETTLED', $5, $5, 1
       ${numbered ? ', $6, $7, $8' : ''})`,
    [debtor, instruction, creditor, intermediary, finalAt, ...sequences],
  );
  for (const [role, c] of Object.entries(confirmations)) {
    await pool.query(
      `INSERT INTO confirmations (bic, sequence, debtor_agent, instruction_id, role, status, final_at, batch_id)
       VALUES ($1, $2, $3, $4, $5, 'SETTLED', $6, 1)`,
      [c.bic, c.sequence, debtor, instruction, role, finalAt],
    );
  }
}

/**
 * Runs `run` on a fresh database migrated through the first `migrations`
 * files only, as a database of an earlier version has it; dropped after.
 */
async function atEarlierVersion(migrations: string[], run: (pool: pg.Pool) => Promise<void>): Promise<void> {
  const bare = await createBareDatabase();
  const pool = openTestPool(bare.url, 2);
  const directory = await mkdtemp(path.join(os.tmpdir(), 'clearing-migrations-'));
  try {
    for (const name of migrations) await copyFile(new URL(`./migrations/${name}`, import.meta.url), path.join(directory, name));
    await migrate(pool, { directory: pathToFileURL(`${directory}/`) });
    await run(pool);
  } finally {
    await pool.end();
    await bare.drop();
    await rm(directory, { recursive: true, force: true });
  }
}

const range = (bic: string, firstSequence: bigint, lastSequence: bigint, deliveredAt: Date) => ({ bic, firstSequence, lastSequence, deliveredAt });

describe('confirmation delivery marks', () => {
  test('a confirmation was delivered at the earliest range that holds it, of its own bank', async () => {
    await settledTransfer(db.pool, 'DLVADEFFXXX', 'dlv-1', {
      DEBTOR: { bic: 'DLVADEFFXXX', sequence: 3 },
      CREDITOR: { bic: 'DLVBDEFFXXX', sequence: 7 },
      INTERMEDIARY: { bic: 'DLVGDEFFXXX', sequence: 2 },
    });
    await insertConfirmationDeliveries(db.pool, [
      range('DLVADEFFXXX', 1n, 2n, at(1)), // before it
      range('DLVADEFFXXX', 3n, 5n, at(30)), // holds it, later
      range('DLVADEFFXXX', 2n, 4n, at(20)), // holds it: the earliest
      range('DLVADEFFXXX', 4n, 9n, at(2)), // after it
      range('DLVBDEFFXXX', 1n, 6n, at(3)), // the creditor's stream stopped before 7…
      range('DLVBDEFFXXX', 8n, 9n, at(4)), // …and resumed after it
      range('DLVCDEFFXXX', 1n, 10n, at(0)), // another bank's sequences
      range('DLVGDEFFXXX', 2n, 2n, at(40)),
    ]);
    const events = await selectConfirmationEvents(db.pool, 'DLVADEFFXXX', 'dlv-1');
    expect(events.map((e) => [e.bic, e.role, e.deliveredAt])).toEqual([
      ['DLVGDEFFXXX', 'INTERMEDIARY', at(40)],
      ['DLVADEFFXXX', 'DEBTOR', at(20)],
      ['DLVBDEFFXXX', 'CREDITOR', null],
    ]);
  });

  test('a confirmation at the far end of the longest range is found', async () => {
    const last = 5_000;
    const first = last - deliveredRangeSequencesMax + 1;
    await settledTransfer(db.pool, 'DLVLDEFFXXX', 'dlv-long', { DEBTOR: { bic: 'DLVLDEFFXXX', sequence: last } });
    await insertConfirmationDeliveries(db.pool, [range('DLVLDEFFXXX', BigInt(first), BigInt(last), at(5))]);
    expect((await selectConfirmationEvents(db.pool, 'DLVLDEFFXXX', 'dlv-long')).map((e) => e.deliveredAt)).toEqual([at(5)]);
  });

  test('the table refuses a range longer than a lookup reads back', async () => {
    const tooLong = range('DLVXDEFFXXX', 1n, BigInt(deliveredRangeSequencesMax) + 1n, at(0));
    await expect(insertConfirmationDeliveries(db.pool, [tooLong])).rejects.toMatchObject({ code: '23514' });
    await expect(insertConfirmationDeliveries(db.pool, [range('DLVXDEFFXXX', 4n, 3n, at(0))])).rejects.toMatchObject({ code: '23514' });
  });

  test('retention forgets the ranges of the confirmations it purges, and only those', async () => {
    const bic = 'DLVRDEFFXXX';
    const old = new Date(Date.now() - 2 * 86_400_000);
    await db.pool.query(`INSERT INTO participants (bic, name, kind, status, acceptance_mode) VALUES ($1, 'Bank', 'BANK', 'ACTIVE', 'AUTOMATIC')`, [bic]);
    for (let sequence = 1; sequence <= 6; sequence++) {
      await settledTransfer(db.pool, bic, `dlv-r${sequence}`, { DEBTOR: { bic, sequence } }, sequence <= 4 ? old : new Date());
    }
    await insertConfirmationDeliveries(db.pool, [range(bic, 1n, 2n, at(1)), range(bic, 3n, 5n, at(2)), range(bic, 6n, 6n, at(3))]);
    expect(await purgeConfirmations(db.pool, 86_400, 100, 10)).toEqual({ deleted: 4, skipped: false });
    const left = await db.pool.query(`SELECT first_sequence::int AS first, last_sequence::int AS last FROM confirmation_deliveries WHERE bic = $1 ORDER BY 1`, [bic]);
    expect(left.rows).toEqual([
      { first: 3, last: 5 },
      { first: 6, last: 6 },
    ]);
    expect((await selectConfirmationEvents(db.pool, bic, 'dlv-r5')).map((e) => e.deliveredAt)).toEqual([at(2)]);
  });
});

describe('migration 0002', () => {
  test('keeps the delivery marks written before it, and those of nodes of the previous version', async () => {
    await atEarlierVersion(['0001_initial.sql'], async (pool) => {
      // Before 0004, transfers do not keep their confirmations' sequence numbers; 0004 copies them.
      await settledTransfer(
        pool,
        'MIGADEFFXXX',
        'mig-1',
        { DEBTOR: { bic: 'MIGADEFFXXX', sequence: 1 }, CREDITOR: { bic: 'MIGBDEFFXXX', sequence: 2 }, INTERMEDIARY: { bic: 'MIGCDEFFXXX', sequence: 3 } },
        new Date(),
        false,
      );
      await pool.query(`UPDATE confirmations SET delivered_at = $1 WHERE bic = 'MIGADEFFXXX'`, [at(7)]);

      expect((await migrate(pool)).applied[0]).toBe('0002_confirmation_deliveries.sql');
      // A node of the previous version, still running, marks B the old way; this version marks C and A.
      await pool.query(`UPDATE confirmations SET delivered_at = $1 WHERE bic = 'MIGBDEFFXXX'`, [at(8)]);
      await insertConfirmationDeliveries(pool, [range('MIGCDEFFXXX', 3n, 3n, at(9)), range('MIGADEFFXXX', 1n, 1n, at(10))]);
      expect((await selectConfirmationEvents(pool, 'MIGADEFFXXX', 'mig-1')).map((e) => [e.bic, e.deliveredAt])).toEqual([
        ['MIGADEFFXXX', at(7)], // the earlier of the column and the range
        ['MIGBDEFFXXX', at(8)],
        ['MIGCDEFFXXX', at(9)],
      ]);
    });
  });
});

describe('migration 0004', () => {
  test('gives each transfer the numbers of the confirmations it had, and drops the two indexes', async () => {
    await atEarlierVersion(['0001_initial.sql', '0002_confirmation_deliveries.sql', '0003_settlement_expect.sql'], async (pool) => {
      const all = { DEBTOR: { bic: 'MGDADEFFXXX', sequence: 4 }, CREDITOR: { bic: 'MGDBDEFFXXX', sequence: 9 }, INTERMEDIARY: { bic: 'MGDCDEFFXXX', sequence: 2 } } as const;
      await settledTransfer(pool, 'MGDADEFFXXX', 'three', all, new Date(), false);
      // Rejected at receipt (an unknown creditor): the debtor's confirmation only.
      await settledTransfer(pool, 'MGDADEFFXXX', 'debtor-only', { DEBTOR: { bic: 'MGDADEFFXXX', sequence: 5 } }, new Date(), false);
      await pool.query(
        `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
           debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, reserved_at, expire_at, batch_id)
         VALUES ('MGDADEFFXXX', 'reserved', 'reserved', gen_random_uuid(), 'MGDBDEFFXXX', 'EUR', 1, 'n', 'i', 'n', 'i', '\\x00',
                 'RESERVED', now(), now(), now() + interval '1 minute', 1)`,
      );

      // 0004 first; later migrations follow it.
      expect((await migrate(pool)).applied[0]).toBe('0004_confirmations_by_key.sql');
      const numbers = await pool.query(
        `SELECT instruction_id, debtor_confirmation::int AS d, creditor_confirmation::int AS c, intermediary_confirmation::int AS i
           FROM transfers ORDER BY instruction_id`,
      );
      expect(numbers.rows).toEqual([
        { instruction_id: 'debtor-only', d: 5, c: null, i: null },
        { instruction_id: 'reserved', d: null, c: null, i: null },
        { instruction_id: 'three', d: 4, c: 9, i: 2 },
      ]);
      expect((await selectConfirmationEvents(pool, 'MGDADEFFXXX', 'three')).map((e) => [e.bic, e.role])).toEqual([
        ['MGDCDEFFXXX', 'INTERMEDIARY'],
        ['MGDADEFFXXX', 'DEBTOR'],
        ['MGDBDEFFXXX', 'CREDITOR'],
      ]);
      expect((await selectConfirmationEvents(pool, 'MGDADEFFXXX', 'debtor-only')).map((e) => e.role)).toEqual(['DEBTOR']);
      // The copy went around the immutability trigger; afterwards it guards final transfers again.
      await expect(pool.query(`UPDATE transfers SET reason = 'x' WHERE instruction_id = 'three'`)).rejects.toThrow(/is final/);
      const indexes = await pool.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'confirmations' ORDER BY 1`);
      expect(indexes.rows.map((r) => r.indexname)).toEqual(['confirmations_pkey']);
    });
  });
});
