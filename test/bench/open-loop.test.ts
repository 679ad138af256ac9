// The open loop's measured window starts only once the warm-up's backlog has
// drained: a node that fell behind while it warmed up is measured in its steady
// state, not while it catches up.
import { describe, expect, test } from 'vitest';
import { Ledger, Recorder, TransferFactory } from './load.js';
import { parseOptions, type BenchOptions } from './options.js';
import { measure, openLoop, openLoopDrainedBacklogSeconds, type WorkloadContext } from './workloads.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function context(warmupSeconds: number, durationSeconds: number): WorkloadContext {
  return {
    // Shorter than the command line allows: these loads stand for a node only.
    options: { ...(parseOptions([]) as BenchOptions), warmupSeconds, durationSeconds },
    factory: new TransferFactory(),
    progress: () => () => undefined,
    sampleCpu: () => ({ atMs: performance.now(), processes: new Map() }),
    waitQuiet: async () => 0,
    beforeMeasuring: async () => undefined,
  };
}

describe('open loop warm-up', () => {
  test('measuring waits until the calls outstanding are down to a steady state', async () => {
    const ratePerSecond = 200;
    const recorder = new Recorder(new Ledger(false));
    // A server that answers nothing for its first 0.6 s (a cold node), then at once.
    const slowUntilMs = performance.now() + 600;
    let dueOfFirstMeasured: number | undefined;
    const load = openLoop(ratePerSecond, recorder, async (dueMs) => {
      await sleep(Math.max(0, slowUntilMs - performance.now()));
      if (recorder.measuring) dueOfFirstMeasured ??= dueMs;
      recorder.callSucceeded([], performance.now() - dueMs);
    });
    const startedMs = performance.now();
    await measure(context(0.2, 0.3), 'open', recorder, load);
    expect(recorder.backlogDrained).toBe(true);
    // The warm-up lasted until the backlog was answered, not just the 0.2 s asked for.
    expect(recorder.warmupSeconds).toBeGreaterThanOrEqual(0.55);
    expect(recorder.measureStartMs - startedMs).toBeGreaterThanOrEqual(550);
    // What the window measured was sent after the stall: latencies of a steady state.
    expect(dueOfFirstMeasured).toBeGreaterThanOrEqual(slowUntilMs - 1000 * openLoopDrainedBacklogSeconds);
    // Without the wait the window would hold calls that waited out the stall (~600 ms).
    expect(recorder.latency.maxValue / 1000).toBeLessThan(400);
  });

  test('with nothing queued the window starts after the warm-up asked for', async () => {
    const recorder = new Recorder(new Ledger(false));
    const load = openLoop(200, recorder, async (dueMs) => recorder.callSucceeded([], performance.now() - dueMs));
    await measure(context(0.2, 0.2), 'open', recorder, load);
    expect(recorder.backlogDrained).toBe(true);
    expect(recorder.warmupSeconds).toBeLessThan(0.4);
  });
});
