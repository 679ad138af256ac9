// Records when confirmations were first delivered (InspectTransfer's
// CONFIRMATION_DELIVERED events), a flush at a time: one row per stream page,
// the page's sequence range and the time it was written, all of a flush in
// one INSERT. Each page keeps its own delivery time, so coalescing changes
// when the mark is written, never what it says. Marks are operational
// information, not money: if a flush fails it is logged and those marks are
// lost; the confirmations were delivered all the same.
import assert from 'node:assert/strict';
import type { Logger } from '../telemetry/logger.js';
import { deliveredRangeSequencesMax } from '../store/reads.js';

export { deliveredRangeSequencesMax };

/** How long a delivery mark may wait before it is written. */
export const deliveryFlushMs = 250;
/**
 * Pages of marks held before a flush is forced (and the most one statement
 * writes); while a write is in flight and this many wait, further marks are
 * dropped and counted in a warning.
 */
export const deliveryRangesMax = 4_096;

export interface DeliveredRange {
  bic: string;
  firstSequence: bigint;
  lastSequence: bigint;
  deliveredAt: Date;
}

export class DeliveryRecorder {
  private pending: DeliveredRange[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** The write in flight, if any: at most one, so a slow database cannot pile writes up. */
  private inFlight: Promise<void> | undefined;
  /** Marks dropped because the buffer was full while a write was in flight, not yet reported. */
  private dropped = 0;
  private closed = false;

  constructor(
    private readonly write: (ranges: DeliveredRange[]) => Promise<void>,
    private readonly logger: Logger,
    private readonly flushMs: number = deliveryFlushMs,
    private readonly rangesMax: number = deliveryRangesMax,
  ) {
    assert(flushMs >= 0 && rangesMax >= 1, 'delivery recorder limits out of range');
  }

  /** Notes that `bic`'s confirmations first..last were written to a stream just now. */
  record(bic: string, firstSequence: bigint, lastSequence: bigint): void {
    assert(firstSequence <= lastSequence, 'a delivered range runs forwards');
    if (this.closed) return; // stopping: the database is going away
    const deliveredAt = new Date();
    // A page holds at most confirmationPageMax rows, but sequences purged by
    // retention between its rows would make it span more than the table
    // allows: such a range is recorded in pieces.
    const span = BigInt(deliveredRangeSequencesMax);
    for (let first = firstSequence; first <= lastSequence; first += span) {
      if (this.pending.length >= this.rangesMax) {
        // Full, and the previous write has not finished: the database is slow or away.
        this.dropped += 1;
        return;
      }
      const last = first + span - 1n < lastSequence ? first + span - 1n : lastSequence;
      this.pending.push({ bic, firstSequence: first, lastSequence: last, deliveredAt });
    }
    if (this.pending.length >= this.rangesMax) void this.flush();
    else this.schedule();
  }

  /** Writes what is pending, after the write in flight (if any) has finished. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.inFlight !== undefined) await this.inFlight;
    const ranges = this.pending;
    if (ranges.length === 0) return;
    this.pending = [];
    if (this.dropped > 0) {
      this.logger.warn({ dropped: this.dropped, rangesMax: this.rangesMax }, 'confirmation delivery marks dropped: the database did not keep up');
      this.dropped = 0;
    }
    this.inFlight = this.write(ranges).then(
      () => undefined,
      (error: unknown) => {
        this.logger.warn({ err: error, ranges: ranges.length }, 'could not record confirmation deliveries');
      },
    );
    try {
      await this.inFlight;
    } finally {
      this.inFlight = undefined;
      // Marks that came in meanwhile wait for their own interval.
      if (this.pending.length > 0) this.schedule();
    }
  }

  /** Writes what is pending and records nothing more (the node is stopping). */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  /** One timer at a time, and none while a write is in flight (its end schedules the next). */
  private schedule(): void {
    if (this.timer !== undefined || this.inFlight !== undefined || this.closed) return;
    this.timer = setTimeout(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }
}
