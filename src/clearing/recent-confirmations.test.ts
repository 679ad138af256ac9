import { describe, expect, test } from 'vitest';
import { RecentConfirmations } from './recent-confirmations.js';
import type { BatchWrites, ConfirmationRow } from '../store/rows.js';
import { transferRow } from '../../test/support/operations.js';

const finalAt = new Date('2026-11-26T12:00:00Z');

/** A batch confirming one transfer per sequence to `bic`. */
function batch(bic: string, sequences: number[]): Pick<BatchWrites, 'confirmations' | 'transfers' | 'finalizedTransfers'> {
  const transfers = sequences.map((s) => transferRow(String(s), 'CREDFRPPXXX', { finalAt }));
  const confirmations: ConfirmationRow[] = sequences.map((s) => ({
    bic,
    sequence: BigInt(s),
    debtorAgent: 'DEBTDEFFXXX',
    instructionId: String(s),
    role: 'CREDITOR',
    status: 'SETTLED',
    reasonCode: '',
    reason: '',
    finalAt,
  }));
  return { confirmations, transfers, finalizedTransfers: [] };
}

const sequences = (views: { sequence: bigint }[] | undefined) => views?.map((v) => Number(v.sequence));

describe('RecentConfirmations', () => {
  test('keeps nothing for a participant nobody follows on this node', () => {
    const recent = new RecentConfirmations();
    recent.add(batch('CREDFRPPXXX', [1, 2, 3]));
    expect(recent.after('CREDFRPPXXX', 0n, 10)).toBeUndefined();
  });

  test('answers from memory only when it holds the very next sequence', () => {
    const recent = new RecentConfirmations();
    recent.subscribe('CREDFRPPXXX');
    recent.add(batch('CREDFRPPXXX', [4, 5, 6]));
    expect(recent.after('CREDFRPPXXX', 3n, 10)).toBeDefined();
    expect(sequences(recent.after('CREDFRPPXXX', 3n, 10))).toEqual([4, 5, 6]);
    expect(sequences(recent.after('CREDFRPPXXX', 4n, 1))).toEqual([5]);
    // Before the run (the backlog) and at its end (maybe another node's batch): the database.
    expect(recent.after('CREDFRPPXXX', 2n, 10)).toBeUndefined();
    expect(recent.after('CREDFRPPXXX', 6n, 10)).toBeUndefined();
    expect(recent.after('OTHRDEFFXXX', 3n, 10)).toBeUndefined();
  });

  test('a batch after a gap (another node committed in between) starts a new run', () => {
    const recent = new RecentConfirmations();
    recent.subscribe('CREDFRPPXXX');
    recent.add(batch('CREDFRPPXXX', [1, 2, 3]));
    recent.add(batch('CREDFRPPXXX', [7, 8]));
    // 4..6 are only in the database: nothing in memory may be served for them.
    expect(recent.after('CREDFRPPXXX', 3n, 10)).toBeUndefined();
    expect(recent.after('CREDFRPPXXX', 0n, 10)).toBeUndefined();
    expect(sequences(recent.after('CREDFRPPXXX', 6n, 10))).toEqual([7, 8]);
    // A batch older than the run is ignored: the database has it.
    recent.add(batch('CREDFRPPXXX', [5]));
    expect(sequences(recent.after('CREDFRPPXXX', 6n, 10))).toEqual([7, 8]);
  });

  test('carries the transfer fields a confirmation shows', () => {
    const recent = new RecentConfirmations();
    recent.subscribe('CREDFRPPXXX');
    recent.add(batch('CREDFRPPXXX', [1]));
    expect(recent.after('CREDFRPPXXX', 0n, 1)).toEqual([
      {
        sequence: 1n,
        uetr: '00000000-0000-4000-8000-000000000001',
        instructionId: '1',
        endToEndId: 'e2e-1',
        role: 'CREDITOR',
        status: 'SETTLED',
        reasonCode: '',
        reason: '',
        currency: 'EUR',
        amountMinor: 100n,
        debtorAgent: 'DEBTDEFFXXX',
        creditorAgent: 'CREDFRPPXXX',
        finalAt,
        traceId: 'trace-1',
      },
    ]);
  });

  test('holds at most its limit per participant, the newest', () => {
    const recent = new RecentConfirmations(3);
    recent.subscribe('CREDFRPPXXX');
    recent.add(batch('CREDFRPPXXX', [1, 2, 3, 4, 5]));
    expect(recent.after('CREDFRPPXXX', 1n, 10)).toBeUndefined();
    expect(sequences(recent.after('CREDFRPPXXX', 2n, 10))).toEqual([3, 4, 5]);
  });

  test('forgets a participant when its last local subscriber leaves', () => {
    const recent = new RecentConfirmations();
    const first = recent.subscribe('CREDFRPPXXX');
    const second = recent.subscribe('CREDFRPPXXX');
    recent.add(batch('CREDFRPPXXX', [1]));
    first();
    first(); // twice is harmless
    expect(sequences(recent.after('CREDFRPPXXX', 0n, 10))).toEqual([1]);
    second();
    expect(recent.after('CREDFRPPXXX', 0n, 10)).toBeUndefined();
    recent.add(batch('CREDFRPPXXX', [2]));
    expect(recent.after('CREDFRPPXXX', 1n, 10)).toBeUndefined();
  });

  test('many followed participants share the total, down to a floor each', () => {
    const recent = new RecentConfirmations(1_000, 300);
    for (const bic of ['AAAADEFFXXX', 'BBBBDEFFXXX', 'CCCCDEFFXXX']) recent.subscribe(bic);
    const hundredFifty = Array.from({ length: 150 }, (_, i) => i + 1);
    recent.add(batch('AAAADEFFXXX', hundredFifty));
    // 300 / 3 followed = 100 each: the newest 100 are kept.
    expect(recent.after('AAAADEFFXXX', 49n, 1)).toBeUndefined();
    expect(sequences(recent.after('AAAADEFFXXX', 50n, 1_000))).toEqual(hundredFifty.slice(50));
    const tiny = new RecentConfirmations(1_000, 10);
    tiny.subscribe('AAAADEFFXXX');
    tiny.add(batch('AAAADEFFXXX', hundredFifty));
    // Never below the floor of 64, however small the total.
    expect(sequences(tiny.after('AAAADEFFXXX', 86n, 1_000))?.length).toBe(64);
  });

  test('an idle participant gives up its share when more are followed', () => {
    const recent = new RecentConfirmations(1_000, 300);
    recent.subscribe('AAAADEFFXXX');
    recent.add(batch('AAAADEFFXXX', Array.from({ length: 150 }, (_, i) => i + 1)));
    expect(sequences(recent.after('AAAADEFFXXX', 0n, 1_000))?.length).toBe(150);
    recent.subscribe('BBBBDEFFXXX');
    recent.subscribe('CCCCDEFFXXX');
    // 300 / 3 = 100, without waiting for A's next confirmation.
    expect(recent.after('AAAADEFFXXX', 49n, 1)).toBeUndefined();
    expect(sequences(recent.after('AAAADEFFXXX', 50n, 1_000))?.length).toBe(100);
  });
});
