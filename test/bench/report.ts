// The issue's goals, the final table and the JSON report. Goals are reported,
// never enforced: a MISS does not fail the run (only the end-of-run
// verification does).
import type { BenchOptions } from './options.js';
import type { WorkloadResult } from './workloads.js';

export type Verdict = 'PASS' | 'MISS' | 'n/a';

export interface GoalOutcome {
  goal: string;
  verdict: Verdict;
  /** Why the verdict is n/a, or what missed. */
  note: string;
  /** node ÷ ceiling (calls/s for unary, transfers/s for batch). */
  ceilingRatio?: number;
}

/** The figures of issue 7, for this 2-core machine, all durable. */
export const goals = {
  unaryCeilingRatioMin: 0.8,
  batchSettledPerSecondMin: 50_000,
  openP99MsMax: 25,
  openP999MsMax: 100,
  twoPhaseSettledPerSecondMin: 3_000,
  fanoutP99MsMax: 50,
} as const;

/** The parameters each goal is stated for; other parameters make the verdict n/a. */
const goalParameters = {
  unary: (o: BenchOptions) => o.banks === 20 && o.inFlight === 256,
  batch: (o: BenchOptions) => o.batchSize === 1_000,
  open: (o: BenchOptions) => o.ratePerSecond === 2_000,
  'two-phase': () => true,
  fanout: (o: BenchOptions) => o.subscribers === 10,
} as const;

const goalParameterText = {
  unary: '20 banks, 256 in flight',
  batch: '1,000 per call',
  open: '2,000/s',
  'two-phase': '',
  fanout: '10 subscribers',
} as const;

function ratio(node: number, ceiling: number | undefined): number | undefined {
  if (ceiling === undefined || ceiling === 0) return undefined;
  return Math.round((node / ceiling) * 1000) / 1000;
}

export function evaluate(result: WorkloadResult, ceiling: WorkloadResult | undefined, options: BenchOptions): GoalOutcome {
  if (result.target === 'ceiling') return { goal: '', verdict: 'n/a', note: 'ceiling run' };
  const comparable = goalParameters[result.workload](options) && !options.smoke;
  const notComparable = options.smoke ? 'smoke run' : `goal is for ${goalParameterText[result.workload]}`;
  const errorCount = Object.values(result.errors).reduce((a, b) => a + b, 0);
  const verdict = (ok: boolean): Verdict => (comparable ? (ok ? 'PASS' : 'MISS') : 'n/a');
  switch (result.workload) {
    case 'unary': {
      const r = ratio(result.callsPerSecond, ceiling?.callsPerSecond);
      const goal = `≥ ${goals.unaryCeilingRatioMin} × ceiling calls/s`;
      if (r === undefined) return { goal, verdict: 'n/a', note: 'no ceiling run' };
      return { goal, verdict: verdict(r >= goals.unaryCeilingRatioMin), note: comparable ? '' : notComparable, ceilingRatio: r };
    }
    case 'batch': {
      const r = ratio(result.transfersPerSecond, ceiling?.transfersPerSecond);
      const goal = `≥ ${goals.batchSettledPerSecondMin.toLocaleString('en-US')} settled/s`;
      return { goal, verdict: verdict(result.settledPerSecond >= goals.batchSettledPerSecondMin), note: comparable ? '' : notComparable, ...(r === undefined ? {} : { ceilingRatio: r }) };
    }
    case 'open': {
      const dropped = Number(result.details['dropped'] ?? 0);
      const ok = result.latencyMs.p99 <= goals.openP99MsMax && result.latencyMs.p999 <= goals.openP999MsMax && dropped === 0 && errorCount === 0;
      const note = !comparable ? notComparable : dropped > 0 || errorCount > 0 ? `${dropped} dropped, ${errorCount} errors` : '';
      return { goal: `p99 ≤ ${goals.openP99MsMax} ms, p99.9 ≤ ${goals.openP999MsMax} ms`, verdict: verdict(ok), note };
    }
    case 'two-phase':
      return {
        goal: `≥ ${goals.twoPhaseSettledPerSecondMin.toLocaleString('en-US')} settled/s`,
        verdict: verdict(result.settledPerSecond >= goals.twoPhaseSettledPerSecondMin),
        note: comparable ? '' : notComparable,
      };
    case 'fanout': {
      const missing = Number(result.details['confirmationsMissingAfterDrain'] ?? 0);
      const ok = result.latencyMs.p99 <= goals.fanoutP99MsMax && missing === 0;
      return {
        goal: `p99 commit→delivery ≤ ${goals.fanoutP99MsMax} ms`,
        verdict: verdict(ok),
        note: !comparable ? notComparable : missing > 0 ? `${missing} confirmations missing` : '',
      };
    }
  }
}

// --- table -------------------------------------------------------------------------------

const integerFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const msFormat = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

function pad(cells: string[][], rightAligned: boolean[]): string {
  const widths = cells[0]?.map((_, column) => Math.max(...cells.map((row) => (row[column] ?? '').length))) ?? [];
  return cells
    .map((row) =>
      row
        .map((cell, column) => (rightAligned[column] ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export interface ReportedResult extends WorkloadResult {
  goal: GoalOutcome;
  /** With --rounds above 1: which round (1-based) this row is. */
  round?: number;
  /** With --rounds above 1: this row is the median of that many rounds. */
  medianOfRounds?: number;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

function sumCounts(records: readonly Record<string, number>[]): Record<string, number> {
  const total: Record<string, number> = {};
  for (const record of records) for (const [key, n] of Object.entries(record)) total[key] = (total[key] ?? 0) + n;
  return total;
}

/** The workload's other latencies (e.g. the call from its actual send), each percentile the median of the rounds'. */
function medianLatencyDetails(runs: readonly WorkloadResult[]): { latencyMs?: Record<string, { p50: number; p99: number; p999: number }> } {
  type Summary = { p50: number; p99: number; p999: number };
  const per = runs.map((r) => (r.details['latencyMs'] ?? {}) as Record<string, Summary>);
  const names = Object.keys(per[0] ?? {}).filter((name) => per.every((p) => p[name] !== undefined));
  if (names.length === 0) return {};
  const latencyMs: Record<string, Summary> = {};
  for (const name of names) {
    const of = (pick: (s: Summary) => number) => median(per.map((p) => pick(p[name] as Summary)));
    latencyMs[name] = { p50: of((s) => s.p50), p99: of((s) => s.p99), p999: of((s) => s.p999) };
  }
  return { latencyMs };
}

/**
 * One workload's rounds (same workload, same target) folded into one row:
 * each rate, percentile and core count is the median of the rounds' (an even
 * number of rounds takes the mean of the middle two), `max` is the largest,
 * and what must not be hidden by a median is summed: errors, rejections,
 * dropped sends, missing confirmations, deliveries and measured seconds.
 */
export function medianOfRounds(runs: readonly WorkloadResult[]): WorkloadResult {
  const first = runs[0];
  if (first === undefined) throw new Error('medianOfRounds needs at least one round');
  for (const r of runs) {
    if (r.workload !== first.workload || r.target !== first.target) throw new Error(`medianOfRounds mixes ${first.workload}/${first.target} with ${r.workload}/${r.target}`);
  }
  const of = (pick: (r: WorkloadResult) => number) => median(runs.map(pick));
  const summed = (key: string) =>
    runs.some((r) => r.details[key] !== undefined) ? { [key]: runs.reduce((total, r) => total + Number(r.details[key] ?? 0), 0) } : {};
  const kept = (key: string) => (first.details[key] !== undefined ? { [key]: first.details[key] } : {});
  const cpuCores = {} as WorkloadResult['cpuCores'];
  for (const group of Object.keys(first.cpuCores) as (keyof WorkloadResult['cpuCores'])[]) cpuCores[group] = of((r) => r.cpuCores[group]);
  return {
    workload: first.workload,
    target: first.target,
    latencyOf: first.latencyOf,
    seconds: runs.reduce((total, r) => total + r.seconds, 0),
    callsPerSecond: of((r) => r.callsPerSecond),
    settledPerSecond: of((r) => r.settledPerSecond),
    transfersPerSecond: of((r) => r.transfersPerSecond),
    latencyMs: {
      count: runs.reduce((total, r) => total + r.latencyMs.count, 0),
      p50: of((r) => r.latencyMs.p50),
      p90: of((r) => r.latencyMs.p90),
      p99: of((r) => r.latencyMs.p99),
      p999: of((r) => r.latencyMs.p999),
      max: Math.max(...runs.map((r) => r.latencyMs.max)),
      mean: of((r) => r.latencyMs.mean),
    },
    errors: sumCounts(runs.map((r) => r.errors)),
    rejected: sumCounts(runs.map((r) => r.rejected)),
    details: {
      rounds: runs.length,
      ...summed('dropped'),
      ...summed('confirmationsMissingAfterDrain'),
      ...summed('deliveries'),
      ...kept('offeredPerSecond'),
      ...kept('outstandingMax'),
      ...medianLatencyDetails(runs),
      // The longest warm-up, and whether every round's backlog drained before its window.
      ...(runs.some((r) => r.details['warmupSeconds'] !== undefined) ? { warmupSeconds: Math.max(...runs.map((r) => Number(r.details['warmupSeconds'] ?? 0))) } : {}),
      ...(runs.some((r) => r.details['backlogDrained'] !== undefined) ? { backlogDrained: runs.every((r) => r.details['backlogDrained'] !== false) } : {}),
    },
    cpuCores,
    otherCoresBefore: Math.max(...runs.map((r) => r.otherCoresBefore)),
  };
}

/**
 * Every round's rows as they are, then (with more than one round) one median
 * row per workload and target, whose goal is judged against the median
 * ceiling. Per-round rows are judged against their own round's ceiling.
 */
export function reportRounds(rounds: readonly (readonly WorkloadResult[])[], options: BenchOptions): ReportedResult[] {
  const reported: ReportedResult[] = [];
  const numbered = rounds.length > 1;
  rounds.forEach((raw, index) => {
    for (const r of raw) {
      const ceiling = raw.find((c) => c.workload === r.workload && c.target === 'ceiling');
      reported.push({ ...r, goal: evaluate(r, r.target === 'node' ? ceiling : undefined, options), ...(numbered ? { round: index + 1 } : {}) });
    }
  });
  if (!numbered) return reported;
  const medians: WorkloadResult[] = [];
  for (const r of rounds.flat()) {
    if (medians.some((m) => m.workload === r.workload && m.target === r.target)) continue;
    medians.push(medianOfRounds(rounds.flat().filter((x) => x.workload === r.workload && x.target === r.target)));
  }
  for (const m of medians) {
    const ceiling = medians.find((c) => c.workload === m.workload && c.target === 'ceiling');
    reported.push({ ...m, goal: evaluate(m, m.target === 'node' ? ceiling : undefined, options), medianOfRounds: Number(m.details['rounds']) });
  }
  return reported;
}

/** The final table: one row per run, then one line per workload saying what its latency measures and anything notable. */
export function table(results: readonly ReportedResult[]): string {
  const header = ['workload', 'target', 'calls/s', 'settled/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'errors', 'vs ceiling', 'cores load/server/pg/other', 'goal', 'result'];
  const rows = results.map((r) => {
    const errors = Object.values(r.errors).reduce((a, b) => a + b, 0);
    return [
      r.workload,
      r.round !== undefined ? `${r.target} #${r.round}` : r.medianOfRounds !== undefined ? `${r.target} median` : r.target,
      integerFormat.format(r.callsPerSecond),
      r.target === 'ceiling' ? `(${integerFormat.format(r.transfersPerSecond)})` : integerFormat.format(r.settledPerSecond),
      msFormat.format(r.latencyMs.p50),
      msFormat.format(r.latencyMs.p90),
      msFormat.format(r.latencyMs.p99),
      msFormat.format(r.latencyMs.p999),
      msFormat.format(r.latencyMs.max),
      integerFormat.format(errors),
      r.goal.ceilingRatio === undefined ? '' : r.goal.ceilingRatio.toFixed(2),
      `${r.cpuCores.load.toFixed(2)}/${(r.target === 'ceiling' ? r.cpuCores.noop : r.cpuCores.node).toFixed(2)}/${r.cpuCores.postgres.toFixed(2)}/${r.cpuCores.other.toFixed(2)}`,
      r.goal.goal,
      r.goal.verdict + (r.goal.note === '' ? '' : ` (${r.goal.note})`),
    ];
  });
  const aligned = [false, false, true, true, true, true, true, true, true, true, true, true, false, false];
  const notes: string[] = [];
  // With several rounds, the notes are the median rows' (the rounds' rows are in the table).
  for (const r of results) {
    if (r.round !== undefined) continue;
    const parts = [`latency = ${r.latencyOf}`];
    if (r.medianOfRounds !== undefined) parts.push(`median of ${r.medianOfRounds} rounds (max: the largest; errors, drops, deliveries: summed)`);
    if (r.target === 'ceiling') parts.push('no-op server: canned SETTLED answers; settled/s column shows transfers answered/s');
    if (r.details['dropped'] !== undefined) parts.push(`${integerFormat.format(Number(r.details['dropped']))} sends dropped at ${integerFormat.format(Number(r.details['outstandingMax']))} outstanding`);
    if (r.details['offeredPerSecond'] !== undefined) parts.push(`offered ${integerFormat.format(Number(r.details['offeredPerSecond']))}/s`);
    if (r.details['backlogDrained'] === true) parts.push(`measured after ${msFormat.format(Number(r.details['warmupSeconds']))} s of warm-up, its backlog drained`);
    if (r.details['backlogDrained'] === false) {
      parts.push(
        `after ${msFormat.format(Number(r.details['warmupSeconds']))} s of warm-up more than 0.1 s of the offered rate was still outstanding ` +
          '(a backlog, or a mean latency above 100 ms): measured anyway',
      );
    }
    if (r.details['deliveries'] !== undefined) parts.push(`${integerFormat.format(Number(r.details['deliveries']) / r.seconds)} deliveries/s`);
    const errors = Object.entries(r.errors);
    if (errors.length > 0) parts.push(`errors: ${errors.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const rejected = Object.entries(r.rejected);
    if (rejected.length > 0) parts.push(`rejected: ${rejected.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const extra = r.details['latencyMs'] as Record<string, { p50: number; p99: number; p999: number }> | undefined;
    for (const [name, s] of Object.entries(extra ?? {})) parts.push(`${name}: p50 ${msFormat.format(s.p50)} / p99 ${msFormat.format(s.p99)} / p99.9 ${msFormat.format(s.p999)} ms`);
    notes.push(`  ${r.workload} ${r.target}${r.medianOfRounds !== undefined ? ' median' : ''}: ${parts.join('; ')}`);
  }
  return `${pad([header, ...rows], aligned)}\n\n${notes.join('\n')}`;
}
