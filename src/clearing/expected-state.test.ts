// What a node expects of the rows it settles on: only what its own batches
// left there, forgotten whenever that may be wrong, and bounded.
import { describe, expect, test } from 'vitest';
import type { BatchSnapshot, BatchWrites, ParticipantLockRow, PositionRow } from '../store/rows.js';
import { batchKeys, type Operation } from './batch.js';
import { ExpectedState } from './expected-state.js';
import { participantRow, positionRow, transferOperation } from '../../test/support/operations.js';

const participant = (bic: string, confirmationSequence = 0n) => participantRow(bic, confirmationSequence);
const position = positionRow;
const transfer = (debtorAgent: string, creditorAgent: string): Operation => transferOperation('expected', { debtorAgent, creditorAgent }, 1n);

const snapshot = (participants: ParticipantLockRow[], positions: PositionRow[]): BatchSnapshot => ({
  batchId: 1n,
  participants,
  positions,
  transfers: [],
  uetrsInUse: [],
  positionOperations: [],
});

const noWrites: BatchWrites = {
  operations: 0,
  transfers: [],
  finalizedTransfers: [],
  positions: [],
  participantSequences: [],
  positionOperations: [],
  journal: [],
  confirmations: [],
  transferConfirmations: { debtor: [], creditor: [], intermediary: [] },
  finalizedConfirmations: { debtor: [], creditor: [], intermediary: [] },
  notifications: [],
};

/** A state that has seen one batch on banks A and B (A with 100, B with 0). */
function stateKnowingAandB(limits?: { cooldownMs?: number; participantsMax?: number; positionsMax?: number }): ExpectedState {
  const state = new ExpectedState(limits?.cooldownMs, limits?.participantsMax, limits?.positionsMax);
  state.decided(snapshot([participant('A'), participant('B')], [position('A', 100n), position('B', 0n)]), noWrites);
  return state;
}

describe('ExpectedState', () => {
  test('knows nothing at first: every batch is read under its locks', () => {
    const ops = [transfer('A', 'B')];
    expect(new ExpectedState().rowsFor(ops, batchKeys(ops), 0)).toBeUndefined();
  });

  test('after a batch, the next one on the same rows is expected to find what that batch wrote', () => {
    const state = stateKnowingAandB();
    state.decided(snapshot([participant('A'), participant('B')], [position('A', 100n), position('B', 0n)]), {
      ...noWrites,
      operations: 1,
      positions: [position('A', 60n), position('B', 40n)],
      participantSequences: [
        { bic: 'A', confirmationSequence: 7n, inboundSequence: 0n },
        { bic: 'B', confirmationSequence: 3n, inboundSequence: 0n },
      ],
    });
    const ops = [transfer('B', 'A')];
    const rows = state.rowsFor(ops, batchKeys(ops), 0);
    expect(rows?.participants.map((p) => [p.bic, p.confirmationSequence])).toEqual([
      ['B', 3n],
      ['A', 7n],
    ]);
    expect(rows?.positions.map((p) => [p.bic, p.balanceMinor])).toEqual([
      ['B', 40n],
      ['A', 60n],
    ]);
  });

  test.each([
    { case: 'a participant it never saw', ops: [transfer('A', 'C')] },
    { case: 'a liquidity transfer (not a credit transfer)', ops: [{ kind: 'FUND', requestId: 'r', bic: 'A', currency: 'EUR', amountMinor: 1n, digest: Buffer.alloc(32) } as Operation] },
    { case: 'a transfer in a currency whose position it never saw', ops: [{ ...transfer('A', 'B'), transfer: { ...(transfer('A', 'B') as { transfer: object }).transfer, currency: 'USD' } } as Operation] },
  ])('expects nothing of a batch with $case', ({ ops }) => {
    expect(stateKnowingAandB().rowsFor(ops, batchKeys(ops), 0)).toBeUndefined();
  });

  test('forgets everything when a batch failed, and with a cooldown after a wrong expectation expects nothing for a while', () => {
    const ops = [transfer('A', 'B')];
    const state = stateKnowingAandB({ cooldownMs: 1_000 });
    state.forget(5_000, false);
    expect(state.size).toEqual({ participants: 0, positions: 0 });
    state.decided(snapshot([participant('A'), participant('B')], [position('A', 100n), position('B', 0n)]), noWrites);
    expect(state.rowsFor(ops, batchKeys(ops), 5_000)).toBeDefined();

    state.forget(5_000, true);
    state.decided(snapshot([participant('A'), participant('B')], [position('A', 100n), position('B', 0n)]), noWrites);
    expect(state.rowsFor(ops, batchKeys(ops), 5_999)).toBeUndefined();
    expect(state.rowsFor(ops, batchKeys(ops), 6_000)).toBeDefined();
  });

  test('remembers at most its bounds, forgetting the rows used least recently', () => {
    const state = new ExpectedState(0, 2, 2);
    state.decided(snapshot([participant('A'), participant('B')], [position('A', 1n), position('B', 1n)]), noWrites);
    state.decided(snapshot([participant('C')], [position('C', 1n)]), noWrites);
    expect(state.size).toEqual({ participants: 2, positions: 2 });
    const ab = [transfer('A', 'B')];
    const bc = [transfer('B', 'C')];
    expect(state.rowsFor(ab, batchKeys(ab), 0)).toBeUndefined(); // A was the oldest
    expect(state.rowsFor(bc, batchKeys(bc), 0)).toBeDefined();
  });
});
