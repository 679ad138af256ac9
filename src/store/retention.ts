// Confirmation retention: delete each participant's oldest confirmations once
// they are older than the retention period, a bounded number per statement,
// with the records of their delivery, and record per participant how far the
// purge went so a resume from before it is answered OUT_OF_RANGE.
//
// The walk goes by primary key (bic, sequence), oldest first: confirmations
// have no index on their final time (migration 0004 says why). A
// participant's confirmations are purged as a run from its oldest on, up to
// the first one still inside the retention period, so everything at or below
// confirmations_purged_through is gone and everything above it is kept.
import type pg from 'pg';
import { inTransaction } from './client.js';
import { beginSettlementSql } from './settlement.js';

/**
 * Key of the advisory lock a purge holds for its transaction, so that one
 * node purges at a time and the others skip their turn: the ASCII bytes of
 * "retentio" as a big-endian int64. The migration lock uses "clearing".
 */
export const retentionAdvisoryLockKey = 0x726574656e74696fn;

/** Participants that have a confirmation past retention: their oldest is (one index probe each). */
export const participantsToPurgeSql = `
  SELECT p.bic FROM participants p
   WHERE (SELECT c.final_at FROM confirmations c WHERE c.bic = p.bic ORDER BY c.sequence LIMIT 1)
         < now() - make_interval(secs => $1::float8)
   ORDER BY p.bic`;

/** The statement of purgeConfirmations (exported for its plan test). */
export const purgeConfirmationsSql = `WITH walked AS (
             -- The participant's oldest confirmations, by primary key.
             SELECT c.sequence, c.final_at FROM confirmations c
              WHERE c.bic = $1::text
              ORDER BY c.sequence LIMIT $3::int
           ), purge AS (
             -- The run of them past retention: up to the first one still kept.
             SELECT coalesce(min(sequence) FILTER (WHERE final_at >= now() - make_interval(secs => $2::float8)) - 1,
                             max(sequence)) AS through,
                    count(*) = $3::int AND bool_and(final_at < now() - make_interval(secs => $2::float8)) AS more
               FROM walked
           ), deleted AS (
             DELETE FROM confirmations c USING purge
              WHERE c.bic = $1::text AND c.sequence <= purge.through
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
  /** Participants skipped because another node holds the purge lock (0 or all of them). */
  skipped: boolean;
}

/**
 * Purges past-retention confirmations of every participant that has some:
 * per participant at most `chunksMax` statements of at most `chunkMax`
 * confirmations each, each statement its own short transaction.
 *
 * Locks: the purge advisory lock (tried, never waited for: while another
 * node purges, this one skips its turn), then the confirmation rows it
 * deletes, then one participant row. Settlement batches lock participants
 * and then write new confirmations, never old ones, so neither waits for
 * the other in a cycle.
 */
export async function purgeConfirmations(
  db: pg.Pool,
  retentionSeconds: number,
  chunkMax: number,
  chunksMax: number,
): Promise<PurgeResult> {
  // With scans off too: a seq scan and sort of confirmations per participant
  // would be the plan's worst case on a table whose statistics say empty.
  const participants = await inTransaction(db, beginSettlementSql, (client) =>
    client.query({ text: participantsToPurgeSql, values: [retentionSeconds] }),
  );
  let deleted = 0;
  for (const { bic } of participants.rows as { bic: string }[]) {
    for (let chunk = 0; chunk < chunksMax; chunk++) {
      // Planned like a settlement batch, for its parameters with scans and
      // hash joins off: as a plain statement, the forgetting of delivered
      // ranges was a hash join over all of confirmation_deliveries
      // (settlement-plans.test.ts).
      const step = await inTransaction(db, beginSettlementSql, async (client) => {
        const lock = await client.query({ text: 'SELECT pg_try_advisory_xact_lock($1::bigint) AS held', values: [retentionAdvisoryLockKey.toString()] });
        if (lock.rows[0].held !== true) return undefined;
        const result = await client.query({ text: purgeConfirmationsSql, values: [bic, retentionSeconds, chunkMax] });
        return { deleted: result.rows[0].deleted as number, more: result.rows[0].more as boolean };
      });
      if (step === undefined) return { deleted, skipped: true };
      deleted += step.deleted;
      if (!step.more) break;
    }
  }
  return { deleted, skipped: false };
}
