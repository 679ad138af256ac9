// Reservation timeouts: a sweeper that finds RESERVED transfers past their
// expire time and queues an expiry for each through the settlement loop, like
// every other change to a position. Every node process sweeps; the batch
// re-checks the status under the debtor position's lock, so each transfer
// expires exactly once, and a restarted node catches up on its first sweep.
import type pg from 'pg';
import type { SettlementEngine } from './engine.js';
import type { ExpireOperation } from './batch.js';
import { selectDueReservations } from '../store/reads.js';
import { runPeriodically, type Periodic } from './periodic.js';
import type { Logger } from '../telemetry/logger.js';

export interface ExpiryLimits {
  /** How often the sweeper looks for due reservations. */
  sweepIntervalMs: number;
  /** Most reservations queued for expiry per sweep. */
  sweepTransfersMax: number;
}

const neverCancelled = { cancelled: () => false, deadlineMs: Infinity };

export class ReservationExpirer {
  private job: Periodic | undefined;
  /** UETRs queued for expiry and not yet decided, so a sweep does not queue them twice. */
  private readonly inFlight = new Set<string>();

  constructor(
    private readonly db: pg.Pool,
    private readonly engine: SettlementEngine,
    private readonly limits: ExpiryLimits,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.job = runPeriodically(this.limits.sweepIntervalMs, () => this.sweep());
  }

  async stop(): Promise<void> {
    await this.job?.stop();
  }

  private async sweep(): Promise<void> {
    let due;
    try {
      due = await selectDueReservations(this.db, this.limits.sweepTransfersMax);
    } catch (error) {
      this.logger.warn({ err: error }, 'could not look for due reservations; will retry');
      return;
    }
    const operations: ExpireOperation[] = due.filter((t) => !this.inFlight.has(t.uetr)).map((transfer) => ({ kind: 'expire', transfer }));
    if (operations.length === 0) return;
    for (const op of operations) this.inFlight.add(op.transfer.uetr);
    // Not awaited: the next sweep may run while these settle; inFlight keeps them unique.
    this.engine.submit(operations, neverCancelled).then(
      (outcomes) => {
        for (const o of outcomes) {
          if (o.kind === 'transfer' && !o.replayed && o.transfer.status === 'EXPIRED') {
            this.logger.info({ uetr: o.transfer.uetr, debtorAgent: o.transfer.debtorAgent, creditorAgent: o.transfer.creditorAgent }, 'reservation expired (AB05)');
          }
        }
      },
      (error: unknown) => this.logger.warn({ err: error }, 'could not queue expiries; will retry'),
    ).finally(() => {
      for (const op of operations) this.inFlight.delete(op.transfer.uetr);
    });
  }
}
