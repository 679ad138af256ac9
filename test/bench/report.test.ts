// The benchmark's report: several rounds folded into median rows, judged like single runs.
import { describe, expect, test } from 'vitest';
import { parseOptions, UsageError, type BenchOptions, type WorkloadName } from './options.js';
import { medianOfRounds, reportRounds, table } from './report.js';
import type { WorkloadResult } from './workloads.js';

const options = parseOptions([]) as BenchOptions;

function run(workload: WorkloadName, target: 'node' | 'ceiling', callsPerSecond: number, extra: Partial<WorkloadResult> = {}): WorkloadResult {
  return {
    workload,
    target,
    latencyOf: 'the call',
    seconds: 10,
    callsPerSecond,
    settledPerSecond: target === 'node' ? callsPerSecond : 0,
    transfersPerSecond: callsPerSecond,
    latencyMs: { count: callsPerSecond * 10, p50: callsPerSecond / 100, p90: 2, p99: callsPerSecond / 10, p999: 4, max: callsPerSecond, mean: 1 },
    errors: {},
    rejected: {},
    details: {},
    cpuCores: { load: 0.5, node: 0.5, postgres: 0.5, noop: 0, other: 0 },
    otherCoresBefore: 0,
    ...extra,
  };
}

describe('medianOfRounds', () => {
  test('takes the median of rates and percentiles, the largest max, and sums what a median would hide', () => {
    const m = medianOfRounds([
      run('unary', 'node', 3_000, { errors: { UNAVAILABLE: 2 } }),
      run('unary', 'node', 1_000),
      run('unary', 'node', 2_000, { errors: { UNAVAILABLE: 1, INTERNAL: 1 }, rejected: { AM04: 5 } }),
    ]);
    expect(m.callsPerSecond).toBe(2_000);
    expect(m.latencyMs.p99).toBe(200);
    expect(m.latencyMs.max).toBe(3_000);
    expect(m.latencyMs.count).toBe(60_000);
    expect(m.errors).toEqual({ UNAVAILABLE: 3, INTERNAL: 1 });
    expect(m.rejected).toEqual({ AM04: 5 });
    expect(m.seconds).toBe(30);
    expect(m.details['rounds']).toBe(3);
  });

  test("open loops: the longest warm-up, and a backlog that did not drain in any round is not hidden", () => {
    const open = (warmupSeconds: number, backlogDrained: boolean) => run('open', 'node', 2_000, { details: { offeredPerSecond: 2_000, warmupSeconds, backlogDrained } });
    const drained = medianOfRounds([open(2, true), open(3.4, true), open(2.1, true)]);
    expect(drained.details).toMatchObject({ warmupSeconds: 3.4, backlogDrained: true });
    const notDrained = medianOfRounds([open(2, true), open(22, false), open(2.1, true)]);
    expect(notDrained.details).toMatchObject({ warmupSeconds: 22, backlogDrained: false });
    expect(table(reportRounds([[open(2, true), open(22, false), open(2.1, true)]], options))).toContain(
      "after 22.0 s of warm-up more than 0.1 s of the offered rate was still outstanding",
    );
    expect(table(reportRounds([[open(3.4, true)]], options))).toContain('measured after 3.4 s of warm-up, its backlog drained');
  });

  test('an even number of rounds takes the mean of the middle two', () => {
    expect(medianOfRounds([run('batch', 'node', 10), run('batch', 'node', 40), run('batch', 'node', 20), run('batch', 'node', 30)]).callsPerSecond).toBe(25);
  });

  test('refuses to fold different workloads or targets together', () => {
    expect(() => medianOfRounds([run('unary', 'node', 1), run('unary', 'ceiling', 1)])).toThrow(/mixes/);
    expect(() => medianOfRounds([])).toThrow(/at least one/);
  });
});

describe('reportRounds', () => {
  test('one round: the rows as they are, no round numbers, no medians', () => {
    const rows = reportRounds([[run('unary', 'ceiling', 5_000), run('unary', 'node', 4_500)]], options);
    expect(rows.map((r) => [r.target, r.round, r.medianOfRounds])).toEqual([
      ['ceiling', undefined, undefined],
      ['node', undefined, undefined],
    ]);
    expect(rows[1]?.goal).toMatchObject({ verdict: 'PASS', ceilingRatio: 0.9 });
  });

  test('several rounds: each judged against its own ceiling, then medians judged against the median ceiling', () => {
    const rows = reportRounds(
      [
        [run('unary', 'ceiling', 5_000), run('unary', 'node', 4_500)],
        [run('unary', 'ceiling', 6_000), run('unary', 'node', 3_000)],
        [run('unary', 'ceiling', 5_500), run('unary', 'node', 4_000)],
      ],
      options,
    );
    expect(rows.map((r) => `${r.target} ${r.round !== undefined ? `#${r.round}` : `median of ${r.medianOfRounds}`} ${r.goal.verdict}`)).toEqual([
      'ceiling #1 n/a',
      'node #1 PASS',
      'ceiling #2 n/a',
      'node #2 MISS',
      'ceiling #3 n/a',
      'node #3 MISS',
      'ceiling median of 3 n/a',
      'node median of 3 MISS',
    ]);
    const median = rows[7];
    expect(median?.medianOfRounds).toBe(3);
    expect(median?.goal.ceilingRatio).toBeCloseTo(4_000 / 5_500, 3);
    const printed = table(rows);
    expect(printed).toMatch(/unary\s+node #2\s/);
    expect(printed).toMatch(/unary\s+node median\s/);
    expect(printed).toContain('median of 3 rounds');
  });

  test('a drop in any round fails the median open-loop row even when the median round had none', () => {
    const quiet = { latencyMs: { count: 1, p50: 1, p90: 1, p99: 1, p999: 1, max: 1, mean: 1 } };
    const rows = reportRounds(
      [
        [run('open', 'node', 2_000, { ...quiet, details: { dropped: 0 } })],
        [run('open', 'node', 2_000, { ...quiet, details: { dropped: 7 } })],
        [run('open', 'node', 2_000, { ...quiet, details: { dropped: 0 } })],
      ],
      options,
    );
    expect(rows[0]?.goal.verdict).toBe('PASS');
    expect(rows[3]?.goal).toMatchObject({ verdict: 'MISS', note: '7 dropped, 0 errors' });
  });

  test("the median row keeps the workload's other latencies, each percentile a median", () => {
    const other = (p99: number) => ({ details: { latencyMs: { 'call (from actual send)': { count: 1, p50: 1, p90: 1, p99, p999: p99, max: p99, mean: 1 } } } });
    const m = medianOfRounds([run('open', 'node', 1, other(10)), run('open', 'node', 1, other(30)), run('open', 'node', 1, other(20))]);
    expect(m.details['latencyMs']).toEqual({ 'call (from actual send)': { p50: 1, p99: 20, p999: 20 } });
    expect(table(reportRounds([[m]], options))).toContain('call (from actual send): p50 1.0 / p99 20.0 / p99.9 20.0 ms');
  });
});

describe('--rounds', () => {
  test('defaults to one round and takes 1 to 20', () => {
    expect(options.rounds).toBe(1);
    expect(parseOptions(['--rounds', '3'])?.rounds).toBe(3);
    expect(() => parseOptions(['--rounds', '0'])).toThrow(UsageError);
    expect(() => parseOptions(['--rounds', '21'])).toThrow(UsageError);
  });

  test('refuses more fan-out runs (rounds × attempts) than fresh bank prefixes exist', () => {
    expect(parseOptions(['--rounds', '20'])?.rounds).toBe(20);
    expect(() => parseOptions(['--rounds', '11', '--retry-disturbed', '1'])).toThrow(/at most 21 fan-out runs/);
    expect(parseOptions(['--rounds', '11', '--retry-disturbed', '1', '--workload', 'unary'])?.rounds).toBe(11);
  });
});

describe('--node-flag', () => {
  test('passes Node.js and V8 flags through, one flag each', () => {
    expect(parseOptions([])?.nodeFlags).toEqual([]);
    expect(parseOptions(['--node-flag=--trace-gc', '--node-flag=--max-semi-space-size=32'])?.nodeFlags).toEqual(['--trace-gc', '--max-semi-space-size=32']);
  });

  test.each([['trace-gc'], ['--trace-gc extra.js'], ['-e'], ['--'], ['--=1'], ['']])('refuses %j: not one flag', (flag) => {
    expect(() => parseOptions([`--node-flag=${flag}`])).toThrow(/--node-flag .*must be one flag/);
  });

  test.each([['--eval=1'], ['--print=1'], ['--check'], ['--test'], ['--version']])('refuses %j: node would not run the clearing node', (flag) => {
    expect(() => parseOptions([`--node-flag=${flag}`])).toThrow(/something else than the clearing node/);
  });
});
