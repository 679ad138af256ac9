// Confirmation retention: every node purges confirmations older than the
// retention period in bounded chunks (SKIP LOCKED shares the work).
import type pg from 'pg';
import { purgeConfirmations } from '../store/retention.js';
import { runPeriodically, type Periodic } from './periodic.js';
import type { Logger } from '../telemetry/logger.js';

export interface RetentionLimits {
  retentionSeconds: number;
  sweepIntervalMs: number;
  /** Most confirmations deleted per statement. */
  purgeChunkMax: number;
  /** Most chunks per sweep, so one sweep never runs unbounded. */
  purgeChunksPerSweepMax: number;
}

export function startConfirmationRetention(db: pg.Pool, limits: RetentionLimits, logger: Logger): Periodic {
  return runPeriodically(limits.sweepIntervalMs, async () => {
    try {
      for (let chunk = 0; chunk < limits.purgeChunksPerSweepMax; chunk++) {
        const deleted = await purgeConfirmations(db, limits.retentionSeconds, limits.purgeChunkMax);
        if (deleted > 0) logger.info({ deleted }, 'purged confirmations past retention');
        if (deleted < limits.purgeChunkMax) break;
      }
    } catch (error) {
      logger.warn({ err: error }, 'confirmation purge failed; will retry');
    }
  });
}
