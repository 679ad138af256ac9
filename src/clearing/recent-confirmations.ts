// The latest confirmations this node committed, per participant with a
// confirmation stream open on this node, so a live stream is fed from memory
// after each commit instead of reading the page back from Postgres (with ten
// subscribers, that read was ten queries per batch). How runs are kept, and
// when memory answers, is FollowedRuns'.
import assert from 'node:assert/strict';
import type { BatchWrites, TransferRow } from '../store/rows.js';
import type { ConfirmationView } from '../store/reads.js';
import { FollowedRuns } from './followed-runs.js';

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

export class RecentConfirmations {
  private readonly runs: FollowedRuns<ConfirmationView>;

  constructor(perParticipantMax: number = recentConfirmationsPerParticipantMax, totalMax: number = recentConfirmationsTotalMax) {
    this.runs = new FollowedRuns((c) => c.sequence, {
      perParticipantMax,
      totalMax,
      perParticipantFloor: recentConfirmationsPerParticipantFloor,
    });
  }

  /** Keeps `bic`'s confirmations while the returned function has not been called. */
  subscribe(bic: string): () => void {
    return this.runs.subscribe(bic);
  }

  /** Adds a committed batch's confirmations (call only after COMMIT). */
  add(writes: Pick<BatchWrites, 'confirmations' | 'transfers' | 'finalizedTransfers'>): void {
    if (this.runs.empty || writes.confirmations.length === 0) return;
    let transfers: Map<string, TransferRow> | undefined;
    const transferOf = (debtorAgent: string, instructionId: string): TransferRow => {
      if (transfers === undefined) {
        transfers = new Map();
        for (const t of writes.transfers) transfers.set(`${t.debtorAgent}\u0000${t.instructionId}`, t);
        for (const t of writes.finalizedTransfers) transfers.set(`${t.debtorAgent}\u0000${t.instructionId}`, t);
      }
      const t = transfers.get(`${debtorAgent}\u0000${instructionId}`);
      // Every confirmation is of a transfer written by the same batch.
      assert(t !== undefined, `confirmation of ${debtorAgent}/${instructionId} has no transfer in its batch`);
      return t;
    };
    this.runs.append(
      writes.confirmations,
      (c) => c.bic,
      (c) => {
        const t = transferOf(c.debtorAgent, c.instructionId);
        return {
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
        };
      },
    );
  }

  /**
   * Up to `limit` confirmations of `bic` right after `afterSequence`, or
   * undefined when memory does not hold the next one (read the database).
   */
  after(bic: string, afterSequence: bigint, limit: number): ConfirmationView[] | undefined {
    const run = this.runs.from(bic, afterSequence);
    return run === undefined ? undefined : run.entries.slice(run.start, run.start + limit);
  }
}
