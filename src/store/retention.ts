// Confirmation retention: delete confirmations older than the retention
// period, a bounded number per run, with the records of their delivery, and
// record per participant how far the purge went so a resume from before it is
// answered OUT_OF_RANGE.
import type pg from 'pg';
import { inTransaction } from './client.js';
import { beginSettlementSql } from './settlement.js';

/** The statement of purgeConfirmations (exported for its plan test). */
export const purgeConfirmationsSql = `WITH doomed AS (
             SELECT bic, sequence FROM confirmations
              WHERE final_at < now() - make_interval(secs => $1::float8)
              ORDER BY final_at LIMIT $2::int
                FOR UPDATE SKIP LOCKED
           ), deleted AS (
             DELETE FROM confirmations c USING doomed d
              WHERE c.bic = d.bic AND c.sequence = d.sequence
             RETURNING c.bic, c.sequence
           ), marks AS (
             SELECT bic, max(sequence) AS through FROM deleted GROUP BY bic
           ), marked AS (
             UPDATE participants p SET confirmations_purged_through = greatest(p.confirmations_purged_through, m.through)
               FROM marks m WHERE p.bic = m.bic
           ), forgotten_deliveries AS (
             -- Delivery ranges wholly within the purge go with it (first <= last: the
             -- condition on first_sequence lets the index bound the scan).
             DELETE FROM confirmation_deliveries d USING marks m
              WHERE d.bic = m.bic AND d.first_sequence <= m.through AND d.last_sequence <= m.through
           )
           SELECT count(*)::int AS deleted FROM deleted`;

/**
 * Deletes up to `limit` confirmations whose transfer became final before
 * `retentionSeconds` ago. Returns how many were deleted.
 *
 * Locks: confirmation rows (SKIP LOCKED, so two nodes purging together split
 * the work), then participant rows — never positions, so it cannot deadlock
 * with a settlement batch (positions, then participants).
 */
export async function purgeConfirmations(db: pg.Pool, retentionSeconds: number, limit: number): Promise<number> {
  // Planned like a settlement batch, for its parameters with scans and hash
  // joins off: as a plain statement, the forgetting of delivered ranges was a
  // hash join over all of confirmation_deliveries (settlement-plans.test.ts).
  return inTransaction(db, beginSettlementSql, async (client) => {
    const result = await client.query({ text: purgeConfirmationsSql, values: [retentionSeconds, limit] });
    return result.rows[0].deleted as number;
  });
}
