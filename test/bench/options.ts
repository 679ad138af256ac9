// Command-line options of `npm run bench`, validated once before anything starts.
import { parseArgs } from 'node:util';

export const workloadNames = ['unary', 'batch', 'open', 'two-phase', 'fanout'] as const;
export type WorkloadName = (typeof workloadNames)[number];

export interface BenchOptions {
  workloads: WorkloadName[];
  /** Measured seconds per workload (and per ceiling run). */
  durationSeconds: number;
  /** Seconds each workload runs before measuring starts (JIT, connections, caches). */
  warmupSeconds: number;
  /** Banks with AUTOMATIC acceptance that send and receive the load. */
  banks: number;
  /** EXPLICIT creditor banks of the two-phase workload. */
  creditors: number;
  /** Closed-loop calls in flight (unary, two-phase). */
  inFlight: number;
  /** Transfers per SubmitTransfers call. */
  batchSize: number;
  /** Concurrent SubmitTransfers callers. */
  batchCallers: number;
  /** Open-loop arrival rate, transfers per second. */
  ratePerSecond: number;
  /** Confirmation streams of the fan-out workload. */
  subscribers: number;
  /** Open-loop arrival rate under the fan-out subscribers, transfers per second. */
  fanoutRatePerSecond: number;
  /** gRPC channels (HTTP/2 connections) the load is spread over. */
  channels: number;
  json: boolean;
  smoke: boolean;
  ceiling: boolean;
  /** Extra CLEARING_* settings for the node (e.g. CLEARING_BATCH_WAIT_MS=1), to explore tuning. */
  nodeEnv: Record<string, string>;
  /** Append everything the node writes to this file. */
  nodeLogFile: string | undefined;
  /** Write a V8 CPU profile of the node (node --cpu-prof) into this directory when it stops. */
  nodeCpuProfileDir: string | undefined;
  /** Extra Node.js or V8 flags for the node process (e.g. --trace-gc), to look inside it. */
  nodeFlags: string[];
  /**
   * Before each run, wait up to this many seconds for processes outside the
   * benchmark to use less than `quietOtherCoresMax` cores (0 = do not wait).
   */
  waitQuietSeconds: number;
  /**
   * Runs again (up to this many times) a run during whose measured window
   * processes outside the benchmark used more than `disturbedOtherCoresMax` cores.
   */
  retryDisturbed: number;
  /**
   * ANALYZE the bench database before each run and again after its warm-up,
   * as autovacuum eventually does for a long-running node (a fresh database
   * has no planner statistics until autovacuum's first ANALYZE).
   */
  analyzeBeforeRuns: boolean;
  /**
   * Load pg_stat_statements (embedded Postgres; an external server must already
   * preload it) and print each run's costliest statements after the run.
   */
  pgStatements: boolean;
  /**
   * Runs the selected workloads this many times in turn (round 1: every
   * workload, round 2: every workload, …) and reports each round and, per
   * workload, the median round: the spread between runs on a shared 2-core
   * machine is larger than most changes worth measuring.
   */
  rounds: number;
}

const usage = `usage: npm run bench -- [options]

  --workload <name>     unary | batch | open | two-phase | fanout | all (default all); repeatable
  --duration <s>        measured seconds per workload (default 10; smoke 2)
  --warmup <s>          unmeasured seconds before each workload (default 2; smoke 0); open loops
                        also wait (up to 20 s) until the warm-up's backlog has drained
                        (at most 0.1 s of the rate outstanding)
  --banks <n>           AUTOMATIC banks (default 20; smoke 4)
  --creditors <n>       EXPLICIT creditor banks for two-phase (default 4; smoke 2)
  --in-flight <n>       closed-loop calls in flight for unary and two-phase (default 256; smoke 16)
  --batch-size <n>      transfers per SubmitTransfers call (default 1000; smoke 100)
  --batch-callers <n>   concurrent SubmitTransfers callers (default 4; smoke 2)
  --rate <n>            open-loop transfers per second (default 2000; smoke 200)
  --subscribers <n>     confirmation streams for fanout (default 10; smoke 2)
  --fanout-rate <n>     open-loop transfers per second under fanout (default 1000; smoke 100)
  --channels <n>        gRPC channels (HTTP/2 connections) to spread calls over (default 4)
  --no-ceiling          skip the no-op server runs
  --node-env K=V        extra CLEARING_* setting for the node, e.g. CLEARING_BATCH_WAIT_MS=1; repeatable
  --node-log <file>     append the node's output (CLEARING_LOG_LEVEL=warn unless --node-env sets it) to a file
  --node-cpu-prof <dir> write a V8 CPU profile of the node into <dir> (open it in Chrome DevTools)
  --node-flag=<flag>    extra Node.js or V8 flag for the node process, e.g. --node-flag=--trace-gc; repeatable
  --wait-quiet <s>      before each run wait up to <s> seconds until other processes are (almost) idle (default 0)
  --analyze             ANALYZE the bench database before each run and after its warm-up
                        (planner statistics as a long-running node has them; a fresh database has none)
  --pg-statements       print each run's costliest SQL statements (pg_stat_statements, reset before each
                        measured window; embedded Postgres loads it, an external server must preload it)
  --rounds <n>          run the workloads <n> times in turn; report every round and their median (default 1)
  --retry-disturbed <n> repeat a run (up to <n> times) if other processes took CPU during its measured window (default 0)
  --json                print one JSON object on stdout instead of the table
  --smoke               tiny run for CI (a few seconds per workload, low rates)
  --help

DATABASE_URL=postgres://...  run on that server (a fresh bench_<timestamp> database, dropped
at the end) instead of an embedded, durable Postgres in a temporary directory.`;

/** Rounds are whole benchmark runs; twenty of the default workloads take about half an hour. */
export const roundsMax = 20;
/** Each fan-out run (retries included) creates banks under a fresh BIC prefix letter, F to Z. */
export const fanoutRunsMax = 21;

export class UsageError extends Error {
  override name = 'UsageError';
}

function integer(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new UsageError(`--${name} ${JSON.stringify(raw)}: must be a whole number`);
  const value = Number(raw);
  if (value < min || value > max) throw new UsageError(`--${name} ${value}: must be between ${min} and ${max}`);
  return value;
}

function seconds(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) throw new UsageError(`--${name} ${JSON.stringify(raw)}: must be between ${min} and ${max} seconds`);
  return value;
}

function nodeEnvironment(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const match = /^(CLEARING_[A-Z0-9_]+)=(.*)$/.exec(pair);
    if (match === null) throw new UsageError(`--node-env ${JSON.stringify(pair)}: must be CLEARING_<NAME>=<value>`);
    env[match[1] as string] = match[2] as string;
  }
  return env;
}

/**
 * Flags that make node do something else instead of running the clearing
 * node (evaluate a string, check syntax, run tests or a package script,
 * print help): the bench would wait for a node that never comes.
 */
const nodeModeFlags = new Set(['--eval', '--print', '--check', '--test', '--run', '--watch', '--watch-path', '--interactive', '--help', '--version', '--v8-options']);

/**
 * Node.js and V8 flags for the node process: each one flag (`--name` or
 * `--name=value`, no spaces), none of nodeModeFlags. They come before the
 * node's own (`--import tsx`, `--cpu-prof`): an `--import` given here loads
 * first and must be plain JavaScript, and where a flag is given twice the
 * later one wins.
 */
function nodeFlags(flags: string[]): string[] {
  for (const flag of flags) {
    if (!/^--[A-Za-z0-9][A-Za-z0-9_-]*(=\S*)?$/.test(flag)) {
      throw new UsageError(`--node-flag ${JSON.stringify(flag)}: must be one flag, --<name> or --<name>=<value> (write --node-flag=--trace-gc)`);
    }
    if (nodeModeFlags.has(flag.split('=', 1)[0] as string)) {
      throw new UsageError(`--node-flag ${JSON.stringify(flag)}: would make node run something else than the clearing node`);
    }
  }
  return flags;
}

/** Returns undefined after printing the usage for --help. */
export function parseOptions(argv: string[]): BenchOptions | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        workload: { type: 'string', multiple: true },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        banks: { type: 'string' },
        creditors: { type: 'string' },
        'in-flight': { type: 'string' },
        'batch-size': { type: 'string' },
        'batch-callers': { type: 'string' },
        rate: { type: 'string' },
        subscribers: { type: 'string' },
        'fanout-rate': { type: 'string' },
        channels: { type: 'string' },
        'no-ceiling': { type: 'boolean', default: false },
        'node-env': { type: 'string', multiple: true },
        'node-log': { type: 'string' },
        'node-cpu-prof': { type: 'string' },
        'node-flag': { type: 'string', multiple: true },
        'wait-quiet': { type: 'string' },
        'retry-disturbed': { type: 'string' },
        analyze: { type: 'boolean', default: false },
        'pg-statements': { type: 'boolean', default: false },
        rounds: { type: 'string' },
        json: { type: 'boolean', default: false },
        smoke: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    });
  } catch (error) {
    throw new UsageError(`${error instanceof Error ? error.message : String(error)}\n\n${usage}`);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(`${usage}\n`);
    return undefined;
  }
  const smoke = v.smoke;
  const requested = (v.workload ?? ['all']).flatMap((w) => w.split(',')).map((w) => w.trim());
  const workloads: WorkloadName[] = [];
  for (const name of requested) {
    if (name === 'all') workloads.push(...workloadNames);
    else if ((workloadNames as readonly string[]).includes(name)) workloads.push(name as WorkloadName);
    else throw new UsageError(`--workload ${JSON.stringify(name)}: must be one of ${workloadNames.join(', ')} or all`);
  }
  const options: BenchOptions = {
    // Run order is fixed (the table reads top to bottom the same way every time); duplicates dropped.
    workloads: workloadNames.filter((w) => workloads.includes(w)),
    durationSeconds: seconds('duration', v.duration, smoke ? 2 : 10, 0.5, 3_600),
    warmupSeconds: seconds('warmup', v.warmup, smoke ? 0 : 2, 0, 600),
    banks: integer('banks', v.banks, smoke ? 4 : 20, 2, 10_000),
    creditors: integer('creditors', v.creditors, smoke ? 2 : 4, 1, 1_000),
    inFlight: integer('in-flight', v['in-flight'], smoke ? 16 : 256, 1, 100_000),
    batchSize: integer('batch-size', v['batch-size'], smoke ? 100 : 1_000, 1, 8_190),
    batchCallers: integer('batch-callers', v['batch-callers'], smoke ? 2 : 4, 1, 1_000),
    ratePerSecond: integer('rate', v.rate, smoke ? 200 : 2_000, 1, 1_000_000),
    subscribers: integer('subscribers', v.subscribers, smoke ? 2 : 10, 1, 10_000),
    fanoutRatePerSecond: integer('fanout-rate', v['fanout-rate'], smoke ? 100 : 1_000, 1, 1_000_000),
    channels: integer('channels', v.channels, 4, 1, 64),
    json: v.json,
    smoke,
    ceiling: !v['no-ceiling'],
    nodeEnv: nodeEnvironment(v['node-env'] ?? []),
    nodeLogFile: v['node-log'],
    nodeCpuProfileDir: v['node-cpu-prof'],
    nodeFlags: nodeFlags(v['node-flag'] ?? []),
    waitQuietSeconds: seconds('wait-quiet', v['wait-quiet'], 0, 0, 3_600),
    retryDisturbed: integer('retry-disturbed', v['retry-disturbed'], 0, 0, 100),
    analyzeBeforeRuns: v.analyze,
    pgStatements: v['pg-statements'],
    rounds: integer('rounds', v.rounds, 1, 1, roundsMax),
  };
  const fanoutRunsWorst = options.rounds * (1 + options.retryDisturbed);
  if (options.workloads.includes('fanout') && fanoutRunsWorst > fanoutRunsMax) {
    throw new UsageError(
      `--rounds ${options.rounds} with --retry-disturbed ${options.retryDisturbed} may run fanout ${fanoutRunsWorst} times; ` +
        `at most ${fanoutRunsMax} fan-out runs fit in one invocation (each needs fresh banks)`,
    );
  }
  return options;
}
