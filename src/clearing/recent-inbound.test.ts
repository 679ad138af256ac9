import { describe, expect, test } from 'vitest';
import { RecentInbound } from './recent-inbound.js';
import type { BatchWrites, TransferRow } from '../store/rows.js';
import { transferRow } from '../../test/support/operations.js';

const reservedAt = new Date('2026-11-27T08:00:00Z');
const creditor = 'CREDFRPPXXX';

/** A transfer to `creditorAgent` reserved under inbound sequence `sequence` (null: an AUTOMATIC creditor's). */
function reserved(sequence: number, creditorAgent = creditor): TransferRow {
  return transferRow(String(sequence), creditorAgent, {
    instructionId: `i-${creditorAgent}-${sequence}`,
    status: 'RESERVED',
    receivedAt: reservedAt,
    reservedAt,
    finalAt: null,
    expireAt: new Date(reservedAt.getTime() + 10_000),
    creditorSequence: BigInt(sequence),
  });
}

/** The row a later batch writes when it finalizes `t`. */
function finalized(t: TransferRow, status: 'SETTLED' | 'REJECTED' | 'EXPIRED'): TransferRow {
  return { ...t, status, reasonCode: status === 'EXPIRED' ? 'AB05' : '', finalAt: new Date(reservedAt.getTime() + 1_000), batchId: 2n };
}

function batch(transfers: TransferRow[], finalizedTransfers: TransferRow[] = []): Pick<BatchWrites, 'transfers' | 'finalizedTransfers'> {
  return { transfers, finalizedTransfers };
}

const sequences = (rows: TransferRow[] | undefined) => rows?.map((t) => Number(t.creditorSequence));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => reserved(from + i));

describe('RecentInbound', () => {
  test('keeps nothing for a creditor nobody streams to on this node', () => {
    const recent = new RecentInbound();
    const t = reserved(1);
    recent.add(batch([t]));
    expect(recent.after(creditor, 0n, 10)).toBeUndefined();
    expect(recent.transfer(t.uetr)).toBeUndefined();
  });

  test('serves the reservations in inbound sequence, only when it holds the very next one', () => {
    const recent = new RecentInbound();
    recent.subscribe(creditor);
    recent.add(batch(range(4, 6)));
    expect(sequences(recent.after(creditor, 3n, 10))).toEqual([4, 5, 6]);
    expect(sequences(recent.after(creditor, 4n, 1))).toEqual([5]);
    // Before the run (the backlog) and at its end (maybe another node's batch): the database.
    expect(recent.after(creditor, 2n, 10)).toBeUndefined();
    expect(recent.after(creditor, 6n, 10)).toBeUndefined();
    expect(recent.after('OTHRDEFFXXX', 3n, 10)).toBeUndefined();
  });

  test('keeps only reservations awaiting an answer: not settled or rejected transfers, not AUTOMATIC creditors', () => {
    const recent = new RecentInbound();
    recent.subscribe(creditor);
    const settledOnArrival: TransferRow = { ...reserved(99), status: 'SETTLED', creditorSequence: null, finalAt: reservedAt };
    const automatic: TransferRow = { ...reserved(98), creditorSequence: null };
    recent.add(batch([settledOnArrival, automatic, reserved(1)]));
    expect(sequences(recent.after(creditor, 0n, 10))).toEqual([1]);
    expect(recent.transfer(settledOnArrival.uetr)).toBeUndefined();
    expect(recent.transfer(automatic.uetr)).toBeUndefined();
  });

  test('skips what this node finalized since, as the database read skips what is no longer RESERVED', () => {
    const recent = new RecentInbound();
    recent.subscribe(creditor);
    const rows = range(1, 5);
    recent.add(batch(rows));
    recent.add(batch([], [finalized(rows[1] as TransferRow, 'SETTLED'), finalized(rows[3] as TransferRow, 'EXPIRED')]));
    expect(sequences(recent.after(creditor, 0n, 10))).toEqual([1, 3, 5]);
    // The limit counts what is delivered.
    expect(sequences(recent.after(creditor, 0n, 2))).toEqual([1, 3]);
    // All that is left after the cursor is final: the database answers, or
    // the cursor would never get past them to what another node reserved next.
    recent.add(batch([], [finalized(rows[4] as TransferRow, 'REJECTED')]));
    expect(recent.after(creditor, 3n, 10)).toBeUndefined();
    expect(sequences(recent.after(creditor, 2n, 10))).toEqual([3]);
    // Answers still find them (their parties and amount never change).
    expect(recent.transfer((rows[1] as TransferRow).uetr)?.status).toBe('SETTLED');
  });

  test('answers only while the next entry is fresh: a stream that fell behind reads the database', () => {
    let nowMs = 0;
    const recent = new RecentInbound(1_000, 50_000, 1_000, () => nowMs);
    recent.subscribe(creditor);
    recent.add(batch(range(1, 2)));
    nowMs = 900;
    recent.add(batch(range(3, 4)));
    nowMs = 1_000;
    expect(sequences(recent.after(creditor, 0n, 10))).toEqual([1, 2, 3, 4]);
    nowMs = 1_001;
    // Another node may have finalized 1 and 2 meanwhile; 3 and 4 are still fresh.
    expect(recent.after(creditor, 0n, 10)).toBeUndefined();
    expect(sequences(recent.after(creditor, 2n, 10))).toEqual([3, 4]);
    nowMs = 1_901;
    expect(recent.after(creditor, 2n, 10)).toBeUndefined();
    // Answers still find them: their parties and amount never change.
    expect(recent.transfer(reserved(1).uetr)?.creditorSequence).toBe(1n);
  });

  test('a batch after a gap (another node reserved in between) starts a new run', () => {
    const recent = new RecentInbound();
    recent.subscribe(creditor);
    const first = range(1, 3);
    recent.add(batch(first));
    recent.add(batch(range(7, 8)));
    expect(recent.after(creditor, 3n, 10)).toBeUndefined();
    expect(sequences(recent.after(creditor, 6n, 10))).toEqual([7, 8]);
    // The replaced run's transfers are looked up in the database again.
    expect(recent.transfer((first[0] as TransferRow).uetr)).toBeUndefined();
    expect(recent.transfer(reserved(7).uetr)?.creditorSequence).toBe(7n);
    // A batch older than the run is ignored: the database has it.
    recent.add(batch([reserved(5)]));
    expect(sequences(recent.after(creditor, 6n, 10))).toEqual([7, 8]);
    expect(recent.transfer(reserved(5).uetr)).toBeUndefined();
  });

  test('holds at most its limit per creditor, the newest, and forgets the rest by UETR too', () => {
    const recent = new RecentInbound(3);
    recent.subscribe(creditor);
    recent.add(batch(range(1, 5)));
    expect(recent.after(creditor, 1n, 10)).toBeUndefined();
    expect(sequences(recent.after(creditor, 2n, 10))).toEqual([3, 4, 5]);
    expect(recent.transfer(reserved(2).uetr)).toBeUndefined();
    expect(recent.transfer(reserved(3).uetr)?.creditorSequence).toBe(3n);
  });

  test('forgets a creditor, and its transfers by UETR, when its last local stream ends', () => {
    const recent = new RecentInbound();
    const first = recent.subscribe(creditor);
    const second = recent.subscribe(creditor);
    recent.add(batch([reserved(1)]));
    first();
    first(); // twice is harmless
    expect(sequences(recent.after(creditor, 0n, 10))).toEqual([1]);
    second();
    expect(recent.after(creditor, 0n, 10)).toBeUndefined();
    expect(recent.transfer(reserved(1).uetr)).toBeUndefined();
    recent.add(batch([reserved(2)]));
    expect(recent.after(creditor, 1n, 10)).toBeUndefined();
  });

  test('many followed creditors share the total, down to a floor each', () => {
    const recent = new RecentInbound(1_000, 300);
    for (const bic of ['AAAADEFFXXX', 'BBBBDEFFXXX', 'CCCCDEFFXXX']) recent.subscribe(bic);
    recent.add(batch(Array.from({ length: 150 }, (_, i) => reserved(i + 1, 'AAAADEFFXXX'))));
    // 300 / 3 followed = 100 each: the newest 100 are kept.
    expect(recent.after('AAAADEFFXXX', 49n, 1)).toBeUndefined();
    expect(recent.after('AAAADEFFXXX', 50n, 1_000)?.length).toBe(100);
  });
});
