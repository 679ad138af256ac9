// Confirmation retention: delete each participant's oldest confirmations once
// they are older than the retention period, a bounded number per statement
// and per sweep, with the records of their delivery, and record per
// participant how far the purge went so a resume from before it is answered
// OUT_OF_RANGE.
//
// The walk goes by primary key (bic, sequence), oldest first, from the
// participant's purge mark: confirmations have no index on their final time
// (migration 0004 says why). A participant's confirmations are purged as a
// run, up to the first one still inside the retention period, so everything
// at or below confirmations_purged_through is gone and everything above it is
// kept. One confirmation whose final time lies ahead (a node's clock far
// ahead) therefore holds back the purge of that participant's later ones
// until its own time has come; they are kept longer, never lost.
import assert from 'node:assert/strict';
import type pg from 'pg';
import { transactionOn, withClient } from './client.js';
import { beginSettlementSql } from './settlement.js';

/**
 * Key of the advisory lock a node holds for a whole purge sweep, so that one
 * node purges at a time and the others skip their turn: the ASCII bytes of
 * "retentio" as a big-endian int64. The migration lock uses "clearing".
 */
export const retentionAdvisoryLockKey = 0x726574656e74696fn;

/** Participants whose oldest kept confirmation is past retention (one index probe each). */
export const participantsToPurgeSql = `
  SELECT p.bic FROM participants p
   WHERE (SELECT c.final_at FROM confirmations c
           WHERE c.bic = p.bic AND c.sequence > p.confirmations_purged_through
           ORDER BY c.sequence LIMIT 1)
         < now() - make_interval(secs => $1::float8)
   ORDER BY p.bic`;

/** The statement of one purge step (exported for its plan test). */
export const purgeConfirmationsSql = `WITH mark AS (
             SELECT confirmations_purged_through AS after FROM participants WHERE bic = $1::text
           ), walked AS (
             -- The participant's oldest kept confirmations, by primary key.
             SELECT c.sequence, c.final_at FROM confirmations c
              WHERE c.bic = $1::text AND c.sequence > (SELECT after FROM mark)
              ORDER BY c.sequence LIMIT $3::int
           ), purge AS (
             -- The run of them past retention: up to the first one still kept.
             SELECT coalesce(min(sequence) FILTER (WHERE final_at >= now() - make_interval(secs => $2::float8)) - 1,
                             max(sequence)) AS through,
                    count(*) = $3::int AND bool_and(final_at < now() - make_interval(secs => $2::float8)) AS more
               FROM walked
           ), deleted AS (
             DELETE FROM confirmations c USING purge
              WHERE c.bic = $1::text AND c.sequence > (SELECT after FROM mark) AND c.sequence <= purge.through
             RETURNING c.sequence
           ), marked AS (
             UPDATE participants p SET confirmations_purged_through = greatest(p.confirmations_purged_through, purge.through)
               FROM purge WHERE p.bic = $1::text AND purge.through IS NOT NULL
           ), forgotten_deliveries AS (
             -- Delivery ranges wholly within the purge go with it (first <= last: the
             -- condition on first_sequence lets the index bound the scan).
             DELETE FROM confirmation_deliveries d USING purge
              WHERE d.bic = $1::text AND d.first_sequence <= purge.through AND d.last_sequence <= purge.through
           )
           SELECT (SELECT count(*)::int FROM deleted) AS deleted, coalesce((SELECT more FROM purge), false) AS more`;

export interface PurgeResult {
  /** Confirmations deleted. */
  deleted: number;
  /** True when another node held the purge lock: this call purged nothing. */
  skipped: boolean;
}

/**
 * One purge sweep: the past-retention confirmations of every participant
 * that has some, participant by participant in BIC order, at most `chunkMax`
 * confirmations per statement and `chunksMax` statements in all (the rest
 * waits for the next sweep). Each statement is its own short transaction.
 *
 * Locks: the purge advisory lock for the sweep (tried, never waited for:
 * while another node purges, this one skips its turn), and in each step the
 * confirmation rows it deletes, then one participant row. Settlement batches
 * lock participants and then write new confirmations, never old ones, so
 * neither waits for the other in a cycle.
 */
export async function purgeConfirmations(
  db: pg.Pool,
  retentionSeconds: number,
  chunkMax: number,
  chunksMax: number,
): Promise<PurgeResult> {
  assert(chunkMax > 0 && chunksMax > 0, 'purge bounds are positive');
  const key = retentionAdvisoryLockKey.toString();
  return withClient(db, async (client) => {
    // A session lock, held across the sweep's transactions on this one connection.
    const lock = await client.query({ text: 'SELECT pg_try_advisory_lock($1::bigint) AS held', values: [key] });
    if (lock.rows[0].held !== true) return { deleted: 0, skipped: true };
    try {
      // Planned like a settlement batch, for its parameters with scans and
      // hash joins off: a plain plan of the step forgot delivered ranges with
      // a hash join over all of confirmation_deliveries, and one of the
      // participants' probe may sort a seq scan of confirmations on a table
      // whose statistics say empty (settlement-plans.test.ts).
      const participants = await transactionOn(client, beginSettlementSql, (c) => c.query({ text: participantsToPurgeSql, values: [retentionSeconds] }));
      let deleted = 0;
      let chunks = 0;
      for (const { bic } of participants.rows as { bic: string }[]) {
        let more = true;
        while (more && chunks < chunksMax) {
          chunks += 1;
          const step = await transactionOn(client, beginSettlementSql, (c) => c.query({ text: purgeConfirmationsSql, values: [bic, retentionSeconds, chunkMax] }));
          deleted += step.rows[0].deleted as number;
          more = step.rows[0].more as boolean;
        }
        if (chunks >= chunksMax) break;
      }
      return { deleted, skipped: false };
    } finally {
      // Back in the pool the connection must not keep the lock: if the unlock
      // fails, the error (not a Postgres one) makes withClient discard it.
      await client.query({ text: 'SELECT pg_advisory_unlock($1::bigint)', values: [key] }).catch((error: unknown) => {
        throw new Error(`could not release the retention lock: ${String(error)}`);
      });
    }
  });
}
