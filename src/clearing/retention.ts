// Confirmation retention: every node purges confirmations older than the
// retention period in bounded chunks (one node at a time: an advisory lock).
import type pg from 'pg';
import { purgeConfirmations } from '../store/retention.js';
import { runPeriodically, type Periodic } from './periodic.js';
import type { Logger } from '../telemetry/logger.js';

export interface RetentionLimits {
  retentionSeconds: number;
  sweepIntervalMs: number;
  /** Most confirmations deleted per statement. */
  purgeChunkMax: number;
  /** Most statements per sweep, so one sweep never runs unbounded; the rest waits for the next. */
  purgeChunksPerSweepMax: number;
}

export function startConfirmationRetention(db: pg.Pool, limits: RetentionLimits, logger: Logger): Periodic {
  return runPeriodically(limits.sweepIntervalMs, async () => {
    try {
      const result = await purgeConfirmations(db, limits.retentionSeconds, limits.purgeChunkMax, limits.purgeChunksPerSweepMax);
      if (result.deleted > 0) logger.info({ deleted: result.deleted }, 'purged confirmations past retention');
      if (result.skipped) logger.debug('another node is purging confirmations; skipped this sweep');
    } catch (error) {
      logger.warn({ err: error }, 'confirmation purge failed; will retry');
    }
  });
}
