// Records when confirmations were first delivered (InspectTransfer's
// CONFIRMATION_DELIVERED events), a flush at a time: every stream page used to
// cost its own UPDATE, several per batch with a few subscribers. Each page
// keeps its own delivery time, so coalescing changes when the mark is written,
// never what it says. Marks are operational information, not money: if a flush
// fails it is logged and those marks are lost; the confirmations were
// delivered all the same.
import assert from 'node:assert/strict';
import type { Logger } from '../telemetry/logger.js';

/** How long a delivery mark may wait before it is written. */
export const deliveryFlushMs = 250;
/** Pages of marks held before a flush is forced (and the most one statement writes). */
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
  private flushing: Promise<void> = Promise.resolve();

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
    this.pending.push({ bic, firstSequence, lastSequence, deliveredAt: new Date() });
    if (this.pending.length >= this.rangesMax) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  /** Writes what is pending (after the previous flush, so marks land in order). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const ranges = this.pending;
    if (ranges.length === 0) return this.flushing;
    this.pending = [];
    this.flushing = this.flushing.then(() =>
      this.write(ranges).catch((error: unknown) => {
        this.logger.warn({ err: error, ranges: ranges.length }, 'could not record confirmation deliveries');
      }),
    );
    return this.flushing;
  }
}
