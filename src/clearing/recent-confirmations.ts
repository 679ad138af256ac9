// The latest confirmations this node committed, per participant with a
// confirmation stream open on this node, so a live stream is fed from memory
// after each commit instead of reading the page back from Postgres (with ten
// subscribers, that read was ten queries per batch).
//
// Only committed rows enter (the engine adds a batch after its COMMIT), and
// each participant's entries are one contiguous run of sequence numbers: a
// batch that does not continue the run (another node process committed the
// sequences in between) replaces it. A read is answered from memory only when
// the run holds the very next sequence the stream needs; anything else (a
// backlog, another node's batch) is read from the database as before.
import assert from 'node:assert/strict';
import type { BatchWrites, TransferRow } from '../store/rows.js';
import type { ConfirmationView } from '../store/reads.js';

/** Confirmations kept per participant: two stream pages (see confirmationPageMax). */
export const recentConfirmationsPerParticipantMax = 1_000;
/**
 * Confirmations kept in all (~0.5 kB each): with many participants followed,
 * each keeps totalMax / participants, but never fewer than the floor below
 * (so past totalMax / floor = 3,125 followed participants, the floor rules).
 */
export const recentConfirmationsTotalMax = 200_000;
/** What each followed participant keeps however many there are: enough for one batch's worth. */
export const recentConfirmationsPerParticipantFloor = 64;

interface Run {
  /** Local subscribers of this participant's stream. */
  subscribers: number;
  /** Contiguous by sequence; entries[0].sequence is the lowest. */
  entries: ConfirmationView[];
}

/** Drops the oldest entries of `run` beyond `keepMax`. */
function trim(run: Run, keepMax: number): void {
  if (run.entries.length > keepMax) run.entries.splice(0, run.entries.length - keepMax);
}

export class RecentConfirmations {
  private readonly runs = new Map<string, Run>();

  constructor(
    private readonly perParticipantMax: number = recentConfirmationsPerParticipantMax,
    private readonly totalMax: number = recentConfirmationsTotalMax,
  ) {
    assert(perParticipantMax >= 1 && totalMax >= 1, 'recent confirmation limits must be at least 1');
  }

  /** What each participant may keep now: memory stays near totalMax however many are followed. */
  private keepMax(): number {
    const share = Math.floor(this.totalMax / Math.max(1, this.runs.size));
    return Math.min(this.perParticipantMax, Math.max(recentConfirmationsPerParticipantFloor, share));
  }

  /** Keeps `bic`'s confirmations while the returned function has not been called. */
  subscribe(bic: string): () => void {
    let run = this.runs.get(bic);
    if (run === undefined) this.runs.set(bic, (run = { subscribers: 0, entries: [] }));
    run.subscribers += 1;
    // One more participant followed: everyone's share may have shrunk.
    const keepMax = this.keepMax();
    for (const other of this.runs.values()) trim(other, keepMax);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const current = this.runs.get(bic);
      if (current === undefined) return;
      current.subscribers -= 1;
      if (current.subscribers === 0) this.runs.delete(bic);
    };
  }

  /** Adds a committed batch's confirmations (call only after COMMIT). */
  add(writes: Pick<BatchWrites, 'confirmations' | 'transfers' | 'finalizedTransfers'>): void {
    if (this.runs.size === 0 || writes.confirmations.length === 0) return;
    let transfers: Map<string, TransferRow> | undefined;
    const keepMax = this.keepMax();
    const touched = new Set<Run>();
    for (const c of writes.confirmations) {
      const run = this.runs.get(c.bic);
      if (run === undefined) continue;
      if (transfers === undefined) {
        transfers = new Map();
        for (const t of writes.transfers) transfers.set(`${t.debtorAgent}\u0000${t.instructionId}`, t);
        for (const t of writes.finalizedTransfers) transfers.set(`${t.debtorAgent}\u0000${t.instructionId}`, t);
      }
      const t = transfers.get(`${c.debtorAgent}\u0000${c.instructionId}`);
      // Every confirmation is of a transfer written by the same batch.
      assert(t !== undefined, `confirmation ${c.bic}/${c.sequence} has no transfer in its batch`);
      const last = run.entries[run.entries.length - 1];
      if (last !== undefined && c.sequence <= last.sequence) continue; // older than the run: the database has it
      if (last !== undefined && c.sequence !== last.sequence + 1n) run.entries = []; // a gap: start a new run
      run.entries.push({
        sequence: c.sequence,
        uetr: t.uetr,
        instructionId: c.instructionId,
        endToEndId: t.endToEndId,
        role: c.role,
        status: c.status,
        reasonCode: c.reasonCode,
        reason: c.reason,
        currency: t.currency,
        amountMinor: t.amountMinor,
        debtorAgent: c.debtorAgent,
        creditorAgent: t.creditorAgent,
        finalAt: c.finalAt,
        traceId: t.traceId,
      });
      touched.add(run);
    }
    for (const run of touched) trim(run, keepMax);
  }

  /**
   * Up to `limit` confirmations of `bic` right after `afterSequence`, or
   * undefined when memory does not hold the next one (read the database).
   */
  after(bic: string, afterSequence: bigint, limit: number): ConfirmationView[] | undefined {
    const entries = this.runs.get(bic)?.entries;
    const first = entries?.[0];
    if (entries === undefined || first === undefined) return undefined;
    const offset = afterSequence + 1n - first.sequence;
    if (offset < 0n || offset >= BigInt(entries.length)) return undefined;
    const start = Number(offset);
    return entries.slice(start, start + limit);
  }
}
