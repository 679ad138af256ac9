import { describe, expect, test } from 'vitest';
import pino from 'pino';
import { DeliveryRecorder, deliveredRangeSequencesMax, type DeliveredRange } from './deliveries.js';

const silent = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('DeliveryRecorder', () => {
  test('writes the pages of one interval together, each with its own time', async () => {
    const writes: DeliveredRange[][] = [];
    const recorder = new DeliveryRecorder(async (ranges) => void writes.push(ranges), silent, 50, 100);
    recorder.record('AAAADEFFXXX', 1n, 10n);
    await sleep(5);
    recorder.record('BBBBDEFFXXX', 3n, 3n);
    expect(writes).toEqual([]);
    await sleep(100);
    expect(writes).toHaveLength(1);
    expect(writes[0]?.map((r) => [r.bic, r.firstSequence, r.lastSequence])).toEqual([
      ['AAAADEFFXXX', 1n, 10n],
      ['BBBBDEFFXXX', 3n, 3n],
    ]);
    const [first, second] = writes[0] as DeliveredRange[];
    expect(second?.deliveredAt.getTime()).toBeGreaterThan(first?.deliveredAt.getTime() as number);
  });

  test('a range longer than the table allows is recorded in pieces', async () => {
    const writes: DeliveredRange[][] = [];
    const recorder = new DeliveryRecorder(async (ranges) => void writes.push(ranges), silent, 60_000, 100);
    const longest = BigInt(deliveredRangeSequencesMax);
    recorder.record('AAAADEFFXXX', 1n, longest);
    recorder.record('BBBBDEFFXXX', 5n, 2n * longest + 6n);
    expect(() => recorder.record('AAAADEFFXXX', 5n, 4n)).toThrow(/runs forwards/);
    await recorder.flush();
    expect(writes.map((w) => w.map((r) => [r.bic, r.firstSequence, r.lastSequence]))).toEqual([
      [
        ['AAAADEFFXXX', 1n, longest],
        ['BBBBDEFFXXX', 5n, longest + 4n],
        ['BBBBDEFFXXX', longest + 5n, 2n * longest + 4n],
        ['BBBBDEFFXXX', 2n * longest + 5n, 2n * longest + 6n],
      ],
    ]);
  });

  test('a full buffer is written at once', async () => {
    const writes: DeliveredRange[][] = [];
    const recorder = new DeliveryRecorder(async (ranges) => void writes.push(ranges), silent, 60_000, 3);
    for (let i = 1n; i <= 7n; i++) {
      recorder.record('AAAADEFFXXX', i, i);
      await sleep(1);
    }
    expect(writes.map((w) => w.length)).toEqual([3, 3]);
    await recorder.flush();
    expect(writes.map((w) => w.length)).toEqual([3, 3, 1]);
  });

  test('a failed write is logged and does not stop later ones', async () => {
    const writes: DeliveredRange[][] = [];
    let fail = true;
    const warnings: unknown[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
    const recorder = new DeliveryRecorder(
      async (ranges) => {
        if (fail) throw new Error('database away');
        writes.push(ranges);
      },
      logger,
      10,
      100,
    );
    recorder.record('AAAADEFFXXX', 1n, 1n);
    await recorder.flush();
    fail = false;
    recorder.record('AAAADEFFXXX', 2n, 2n);
    await recorder.flush();
    expect(warnings).toHaveLength(1);
    expect(writes.map((w) => w.map((r) => r.firstSequence))).toEqual([[2n]]);
  });

  test('one write at a time: while it hangs, marks beyond the buffer are dropped and reported', async () => {
    const writes: DeliveredRange[][] = [];
    let release: () => void = () => {};
    const warnings: { dropped?: number }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
    const recorder = new DeliveryRecorder(
      async (ranges) => {
        writes.push(ranges);
        if (writes.length === 1) await new Promise<void>((resolve) => (release = resolve));
      },
      logger,
      60_000,
      2,
    );
    recorder.record('AAAADEFFXXX', 1n, 1n);
    recorder.record('AAAADEFFXXX', 2n, 2n); // full: the first write starts and hangs
    await sleep(10);
    for (let i = 3n; i <= 7n; i++) recorder.record('AAAADEFFXXX', i, i); // 3 and 4 fill the buffer; 5..7 dropped
    await sleep(10);
    expect(writes).toHaveLength(1);
    release();
    await recorder.flush();
    expect(writes.map((w) => w.map((r) => r.firstSequence))).toEqual([[1n, 2n], [3n, 4n]]);
    expect(warnings.map((w) => w.dropped)).toEqual([3]);
  });

  test('close writes what is pending, then records nothing more', async () => {
    const writes: DeliveredRange[][] = [];
    const recorder = new DeliveryRecorder(async (ranges) => void writes.push(ranges), silent, 60_000, 100);
    recorder.record('AAAADEFFXXX', 1n, 5n);
    await recorder.close();
    recorder.record('AAAADEFFXXX', 6n, 6n);
    await recorder.flush();
    expect(writes.map((w) => w.map((r) => r.lastSequence))).toEqual([[5n]]);
  });
});
