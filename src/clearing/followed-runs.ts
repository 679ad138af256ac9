// What this node committed lately for each participant that has a stream open
// on this node, as one contiguous run of that participant's sequence numbers,
// so a live stream is fed from memory after each commit instead of reading
// back from Postgres what the node has just written. The confirmation stream
// (RecentConfirmations) and the inbound stream (RecentInbound) keep one each.
//
// Only committed rows enter (the engine hands a batch over after its COMMIT).
// A row that does not continue its participant's run (another node process
// committed the sequence numbers in between) replaces the run, and a read is
// answered from memory only when the run holds the very next sequence the
// stream needs; anything else (a backlog, another node's batch) is read from
// the database.
import assert from 'node:assert/strict';

export interface FollowedRunLimits {
  /** Entries kept per followed participant. */
  perParticipantMax: number;
  /** Entries kept in all: with many participants followed, each keeps totalMax / participants … */
  totalMax: number;
  /** … but never fewer than this (enough for about one batch). */
  perParticipantFloor: number;
}

interface Run<T> {
  /** Local subscribers of this participant's stream. */
  subscribers: number;
  /** Contiguous by sequence; entries[0] has the lowest. */
  entries: T[];
}

export class FollowedRuns<T> {
  private readonly runs = new Map<string, Run<T>>();

  constructor(
    private readonly sequenceOf: (entry: T) => bigint,
    private readonly limits: FollowedRunLimits,
    /** Called for every entry that enters a run, and for every entry that leaves memory (trimmed, replaced, or its participant no longer followed). */
    private readonly hooks: { remember(entry: T): void; forget(entry: T): void } = { remember: () => undefined, forget: () => undefined },
  ) {
    assert(limits.perParticipantMax >= 1 && limits.totalMax >= 1 && limits.perParticipantFloor >= 1, 'followed run limits must be at least 1');
  }

  /** Whether any participant is followed (nothing to keep otherwise). */
  get empty(): boolean {
    return this.runs.size === 0;
  }

  follows(bic: string): boolean {
    return this.runs.has(bic);
  }

  /** What each participant may keep now: memory stays near totalMax however many are followed. */
  private keepMax(): number {
    const share = Math.floor(this.limits.totalMax / Math.max(1, this.runs.size));
    return Math.min(this.limits.perParticipantMax, Math.max(this.limits.perParticipantFloor, share));
  }

  /** Drops the oldest entries of `run` beyond `keepMax`. */
  private trim(run: Run<T>, keepMax: number): void {
    if (run.entries.length <= keepMax) return;
    for (const entry of run.entries.splice(0, run.entries.length - keepMax)) this.hooks.forget(entry);
  }

  /** Keeps `bic`'s entries while the returned function has not been called. */
  subscribe(bic: string): () => void {
    let run = this.runs.get(bic);
    if (run === undefined) this.runs.set(bic, (run = { subscribers: 0, entries: [] }));
    run.subscribers += 1;
    // One more participant followed: everyone's share may have shrunk.
    const keepMax = this.keepMax();
    for (const other of this.runs.values()) this.trim(other, keepMax);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const current = this.runs.get(bic);
      if (current === undefined) return;
      current.subscribers -= 1;
      if (current.subscribers > 0) return;
      this.runs.delete(bic);
      for (const entry of current.entries) this.hooks.forget(entry);
    };
  }

  /**
   * Appends a batch's committed rows, in sequence order per participant, to
   * the runs of the participants followed; `entryOf` is called only for those.
   */
  append<S>(rows: readonly S[], bicOf: (row: S) => string, entryOf: (row: S) => T): void {
    if (this.runs.size === 0) return;
    const touched = new Set<Run<T>>();
    for (const row of rows) {
      const run = this.runs.get(bicOf(row));
      if (run === undefined) continue;
      const entry = entryOf(row);
      const sequence = this.sequenceOf(entry);
      const last = run.entries[run.entries.length - 1];
      if (last !== undefined) {
        const lastSequence = this.sequenceOf(last);
        if (sequence <= lastSequence) continue; // older than the run: the database has it
        if (sequence !== lastSequence + 1n) {
          // A gap: what lies between is only in the database. Start a new run.
          for (const dropped of run.entries) this.hooks.forget(dropped);
          run.entries = [];
        }
      }
      run.entries.push(entry);
      this.hooks.remember(entry);
      touched.add(run);
    }
    const keepMax = this.keepMax();
    for (const run of touched) this.trim(run, keepMax);
  }

  /**
   * `bic`'s run from the entry right after `afterSequence` on, or undefined
   * when memory does not hold that entry (read the database).
   */
  from(bic: string, afterSequence: bigint): { entries: readonly T[]; start: number } | undefined {
    const entries = this.runs.get(bic)?.entries;
    const first = entries?.[0];
    if (entries === undefined || first === undefined) return undefined;
    const offset = afterSequence + 1n - this.sequenceOf(first);
    if (offset < 0n || offset >= BigInt(entries.length)) return undefined;
    return { entries, start: Number(offset) };
  }
}
