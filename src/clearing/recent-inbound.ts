// The transfers this node reserved lately for each EXPLICIT creditor agent
// with an inbound stream open on this node, in its inbound sequence, so a live
// stream is fed from memory after each commit instead of reading the page back
// from Postgres, and the creditor's answers find their transfers without a
// query (in the two-phase benchmark those two reads were ~10 % of the node's
// CPU: every transfer read twice, parsed row by row). How runs are kept, and
// when memory answers, is FollowedRuns'.
//
// The database read delivers only transfers still RESERVED. Memory knows of
// the transfers this node finalized (answered, expired) and skips those too;
// it does not know what another node finalized (every node's expiry sweep
// expires reservations, whoever made them). So memory answers only while
// the next entry is fresh (recentInboundFreshMs, as a live stream reads right
// after the commit); a stream that fell behind, or a new connection whose
// backlog reaches into the run, reads the database. Within that second a
// transfer another node just finalized may still be delivered, as it may be
// when it becomes final between a database read and its delivery: the
// creditor's answer then returns the final result.
import type { BatchWrites, TransferRow } from '../store/rows.js';
import { FollowedRuns } from './followed-runs.js';

/** Transfers kept per creditor agent: two stream pages (see inboundPageTransfersMax). */
export const recentInboundPerParticipantMax = 1_000;
/** Transfers kept in all (~1 kB each, the rows the batches made anyway). */
export const recentInboundTotalMax = 50_000;
/** What each followed creditor keeps however many there are: enough for one batch's worth. */
export const recentInboundPerParticipantFloor = 64;
/** How long after its commit an entry may be delivered from memory (see above). */
export const recentInboundFreshMs = 1_000;

interface Entry {
  /** As reserved; replaced by the final row when this node finalizes it. */
  row: TransferRow;
  /** When it was added, after its batch's COMMIT (performance.now()). */
  addedMs: number;
}

export class RecentInbound {
  /** Every entry of the runs, by UETR: what answers look up. */
  private readonly byUetr = new Map<string, Entry>();
  private readonly runs: FollowedRuns<Entry>;

  constructor(
    perParticipantMax: number = recentInboundPerParticipantMax,
    totalMax: number = recentInboundTotalMax,
    private readonly freshMs: number = recentInboundFreshMs,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.runs = new FollowedRuns(
      (e) => e.row.creditorSequence ?? 0n,
      { perParticipantMax, totalMax, perParticipantFloor: recentInboundPerParticipantFloor },
      {
        remember: (e) => this.byUetr.set(e.row.uetr, e),
        forget: (e) => {
          if (this.byUetr.get(e.row.uetr) === e) this.byUetr.delete(e.row.uetr);
        },
      },
    );
  }

  /** Keeps the transfers reserved for `bic` while the returned function has not been called. */
  subscribe(bic: string): () => void {
    return this.runs.subscribe(bic);
  }

  /** Adds a committed batch's reservations and finalizations (call only after COMMIT). */
  add(writes: Pick<BatchWrites, 'transfers' | 'finalizedTransfers'>): void {
    if (this.runs.empty) return;
    // Reservations for an EXPLICIT creditor are numbered in its inbound sequence.
    const reserved = writes.transfers.filter((t) => t.status === 'RESERVED' && t.creditorSequence !== null);
    const addedMs = this.nowMs();
    this.runs.append(
      reserved,
      (t) => t.creditorAgent,
      (t): Entry => ({ row: t, addedMs }),
    );
    for (const t of writes.finalizedTransfers) {
      const entry = this.byUetr.get(t.uetr);
      if (entry !== undefined) entry.row = t;
    }
  }

  /**
   * Up to `limit` transfers still RESERVED for `bic` after `afterSequence` of
   * its inbound sequence, or undefined when the database must answer: memory
   * does not hold the next one, or it is no longer fresh, or none after it
   * is still RESERVED here (the cursor stays before the ones skipped, so
   * without the database it would never get past them to what another node
   * reserved after this run).
   */
  after(bic: string, afterSequence: bigint, limit: number): TransferRow[] | undefined {
    const run = this.runs.from(bic, afterSequence);
    if (run === undefined) return undefined;
    // Entries are in commit order: the first one is the oldest.
    if (this.nowMs() - (run.entries[run.start] as Entry).addedMs > this.freshMs) return undefined;
    const page: TransferRow[] = [];
    for (let i = run.start; i < run.entries.length && page.length < limit; i++) {
      const row = (run.entries[i] as Entry).row;
      if (row.status === 'RESERVED') page.push(row);
    }
    return page.length === 0 ? undefined : page;
  }

  /**
   * The transfer with this UETR (lower case), if memory holds it. Only the
   * fields that never change may be relied on: the settlement batch reads the
   * transfer again under its locks.
   */
  transfer(uetr: string): TransferRow | undefined {
    return this.byUetr.get(uetr)?.row;
  }
}
