// The participants and positions as this node's own batches leave them, so
// the next batch on them can be decided before its locks are taken and the
// locks are held only while Postgres writes (store/settlement.ts,
// runExpectedSettlementBatch). Nothing here is trusted: the database compares
// every row a batch was decided against before writing (settlement_expect),
// and a batch whose rows changed is decided again under its locks. A wrong
// expectation costs a round trip, never money.
import assert from 'node:assert/strict';
import type { BatchKeys, BatchSnapshot, BatchWrites, ExpectedRows, ParticipantLockRow, PositionRow } from '../store/rows.js';
import { positionKey, type Operation } from './batch.js';

/** The default of CLEARING_DECIDE_AHEAD_COOLDOWN_MS (EngineLimits.decideAheadCooldownMs). */
export const expectationCooldownMs = 1_000;
/** Participants remembered; beyond this the oldest is forgotten (its batches read under locks). */
export const expectedParticipantsMax = 10_000;
/** Positions remembered, likewise. */
export const expectedPositionsMax = 20_000;

export class ExpectedState {
  private participants = new Map<string, ParticipantLockRow>();
  private positions = new Map<string, PositionRow>();
  private cooldownUntilMs = 0;
  private forgotten = 0;
  constructor(
    private readonly cooldownMs: number = expectationCooldownMs,
    private readonly participantsMax: number = expectedParticipantsMax,
    private readonly positionsMax: number = expectedPositionsMax,
  ) {
    assert(cooldownMs >= 0 && participantsMax >= 1 && positionsMax >= 1, 'expected-state limits out of range');
  }

  /**
   * The rows a batch would be decided against, or undefined when it must read
   * them under its locks: a row not known here, a recent wrong expectation, or
   * an operation that finishes a stored transfer (answers and expiries change a
   * transfer the batch does not lock; only a read under the locks may see it).
   * Asked in the batch's turn (SettlementEngine), after every earlier batch decided.
   */
  rowsFor(operations: readonly Operation[], keys: BatchKeys, nowMs: number): ExpectedRows | undefined {
    if (nowMs < this.cooldownUntilMs) return undefined;
    for (const op of operations) if (op.kind !== 'transfer') return undefined;
    const participants: ParticipantLockRow[] = [];
    for (const bic of keys.participants) {
      const row = this.participants.get(bic);
      if (row === undefined) return undefined;
      participants.push(row);
    }
    const positions: PositionRow[] = [];
    for (const k of keys.positions) {
      const row = this.positions.get(positionKey(k.bic, k.currency));
      if (row === undefined) return undefined;
      positions.push(row);
    }
    return { participants, positions };
  }

  /**
   * A batch was decided (either way): what it leaves behind is the next
   * batch's expectation, before it commits — a batch decided meanwhile on the
   * same rows waits for these locks, and then finds exactly this, or fails.
   */
  decided(snapshot: BatchSnapshot, writes: BatchWrites): void {
    const participants = new Map(snapshot.participants.map((p) => [p.bic, p]));
    for (const s of writes.participantSequences) {
      const row = participants.get(s.bic);
      assert(row !== undefined, 'a batch changes only participants it read');
      participants.set(s.bic, { ...row, confirmationSequence: s.confirmationSequence, inboundSequence: s.inboundSequence });
    }
    for (const row of participants.values()) remember(this.participants, row.bic, row, this.participantsMax);
    for (const row of snapshot.positions) remember(this.positions, positionKey(row.bic, row.currency), row, this.positionsMax);
    for (const row of writes.positions) remember(this.positions, positionKey(row.bic, row.currency), { ...row }, this.positionsMax);
  }

  /**
   * How many times this state was forgotten. A batch decided ahead that is
   * refused after a forget() since it decided was decided on a batch that
   * then failed (an instruction id or UETR taken, say): that refusal says
   * nothing of other writers and starts no cooldown.
   */
  get generation(): number {
    return this.forgotten;
  }

  /** A batch failed, or an expectation was wrong: expect nothing until a batch reads under its locks again. */
  forget(nowMs: number, cooldown: boolean): void {
    this.forgotten += 1;
    this.participants.clear();
    this.positions.clear();
    if (cooldown) this.cooldownUntilMs = nowMs + this.cooldownMs;
  }

  get size(): { participants: number; positions: number } {
    return { participants: this.participants.size, positions: this.positions.size };
  }
}

/** Sets `key` as the newest entry; forgets the oldest beyond `max` (Maps iterate in insertion order). */
function remember<T>(map: Map<string, T>, key: string, value: T, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value as string);
}
