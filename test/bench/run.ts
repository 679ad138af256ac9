// `npm run bench`: the clearing node's benchmark (issue 7). See docs/benchmarks.md.
//
// Three kinds of process: this one generates the load (and orchestrates); the
// node runs as `node --import tsx src/main.ts` (as `npm start`) on a fresh
// database; the ceiling runs as `node --import tsx test/bench/noop-server.ts`. After the workloads, Reconcile must be clean
// and the SETTLED results the clients saw must equal the SETTLED transfers in
// the database, or the run fails with exit code 1.
import os from 'node:os';
import pg from 'pg';
import { credentials, Metadata, type CallOptions, type ServiceError } from '@grpc/grpc-js';
import { OperatorServiceClient, type ReconcileResponse } from '../../src/gen/clearing/v1/operator_service.js';
import { AcceptanceMode, ParticipantKind, ParticipantStatus } from '../../src/gen/clearing/v1/participant.js';
import { fanoutRunsMax, parseOptions, UsageError, type BenchOptions } from './options.js';
import { cpuBetween, killChildrenSync, openDatabase, parentPid, sampleCpu, startClearingNode, startNoopServer, type BenchDatabase, type ChildServer, type CpuSample } from './processes.js';
import { ChannelPool, Ledger, TransferFactory, uncountedLedger, type Recorder } from './load.js';
import { runBatch, runFanout, runOpen, runTwoPhase, runUnary, type WorkloadContext, type WorkloadResult } from './workloads.js';
import { reportRounds, table, type ReportedResult } from './report.js';

/** Long enough that no two-phase reservation expires while its creditor is busy under load. */
const reservationTimeoutMs = 30_000;
/** Liquidity per bank: 10^15 minor units, so no transfer is ever short of funds (AM04). */
const fundingMinor = 1_000_000_000_000_000n;
/** After Ctrl-C, how long stopping Postgres and removing its directory (or dropping the database) may take. */
const interruptedTeardownMs = 30_000;
/** Banks created and funded at once: the operator path is not what is measured, so a few at a time. */
const bankSetupConcurrency = 20;
/** The operator's development identity (loopback only). */
const operatorPrincipal = 'operator/bench';

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

// --- operator calls ------------------------------------------------------------------------

type Operator = OperatorServiceClient;

function operatorCall<Req, Res>(
  client: Operator,
  method: (request: Req, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: Res) => void) => unknown,
  request: Req,
): Promise<Res> {
  const metadata = new Metadata();
  metadata.set('x-principal', operatorPrincipal);
  return new Promise((resolve, reject) => method.call(client, request, metadata, {}, (error, response) => (error ? reject(error) : resolve(response))));
}

/** BIC `<prefix><3 letters>DEFFXXX`: bank code of 4 letters, DE, location FF, branch XXX. */
function bic(prefix: string, index: number): string {
  const letter = (n: number) => String.fromCharCode(65 + (n % 26));
  return `${prefix}${letter(Math.floor(index / 676))}${letter(Math.floor(index / 26))}${letter(index)}DEFFXXX`;
}

async function createBanks(operator: Operator, prefix: string, count: number, acceptanceMode: AcceptanceMode, fund: boolean): Promise<string[]> {
  const bics = Array.from({ length: count }, (_, i) => bic(prefix, i));
  for (let i = 0; i < bics.length; i += bankSetupConcurrency) {
    await Promise.all(
      bics.slice(i, i + bankSetupConcurrency).map(async (b) => {
        await operatorCall(operator, operator.createParticipant, {
          participant: {
            bic: b,
            name: `Benchmark bank ${b}`,
            kind: ParticipantKind.PARTICIPANT_KIND_BANK,
            status: ParticipantStatus.PARTICIPANT_STATUS_ACTIVE,
            acceptanceMode,
            settlementCurrencies: ['EUR'],
            createTime: undefined,
            updateTime: undefined,
          },
        });
        if (fund) {
          await operatorCall(operator, operator.fundPosition, {
            requestId: `fund-${b}`,
            bic: b,
            amount: { currency: 'EUR', amountMinor: fundingMinor },
          });
        }
      }),
    );
  }
  return bics;
}

// --- progress ------------------------------------------------------------------------------

const integerFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function progress(label: string, recorder: Recorder): () => void {
  const startedMs = performance.now();
  let last = { ms: startedMs, calls: 0, settled: 0 };
  const timer = setInterval(() => {
    const nowMs = performance.now();
    const seconds = (nowMs - last.ms) / 1000;
    const calls = (recorder.progressCalls - last.calls) / seconds;
    const settled = (recorder.progressSettled - last.settled) / seconds;
    last = { ms: nowMs, calls: recorder.progressCalls, settled: recorder.progressSettled };
    const h = recorder.latency;
    const p99 = h.totalCount > 0 ? `${(h.getValueAtPercentile(99) / 1000).toFixed(1)} ms` : '-';
    const phase = recorder.measuring ? '' : recorder.measureEndMs > 0 ? '  (draining)' : '  (warm-up)';
    process.stderr.write(
      `${label.padEnd(14)} ${((nowMs - startedMs) / 1000).toFixed(0).padStart(3)} s  calls/s ${integerFormat.format(calls).padStart(7)}  ` +
        `settled/s ${integerFormat.format(settled).padStart(7)}  p99 so far ${p99.padStart(9)}  errors ${recorder.progressErrors}${phase}\n`,
    );
  }, 1_000);
  return () => clearInterval(timer);
}

// --- a quiet machine -------------------------------------------------------------------

/** Processes outside the benchmark using less than this many cores count as a quiet machine. */
const quietOtherCoresMax = 0.1;
/** A run during which processes outside the benchmark used more than this many cores counts as disturbed. */
const disturbedOtherCoresMax = 0.25;

/**
 * Runs `once` again while its measured window was disturbed by other
 * processes, up to `retries` times; the last run stands either way. The
 * discarded runs' outcomes stay in the ledger (the database has them too).
 */
async function undisturbed(label: string, retries: number, once: () => Promise<WorkloadResult>): Promise<WorkloadResult> {
  for (let attempt = 0; ; attempt++) {
    const result = await once();
    const other = result.cpuCores.other;
    if (other <= disturbedOtherCoresMax || attempt >= retries) {
      return attempt === 0 ? result : { ...result, details: { ...result.details, disturbedRunsDiscarded: attempt } };
    }
    log(`${label}: other processes used ${other.toFixed(2)} cores during the measured window; running it again (${attempt + 1} of ${retries})`);
  }
}

/**
 * Measures for a second what processes outside the benchmark use; while that
 * is above `quietOtherCoresMax`, waits, up to `waitSeconds`. Another test run
 * on the same two cores would otherwise be measured as the node's slowness.
 */
async function waitQuiet(label: string, waitSeconds: number, sample: () => CpuSample): Promise<number> {
  const deadlineMs = Date.now() + waitSeconds * 1000;
  for (let announced = false; ; ) {
    const from = sample();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const other = cpuBetween(from, sample()).other;
    if (other < quietOtherCoresMax || Date.now() >= deadlineMs) {
      if (other >= quietOtherCoresMax) log(`${label}: other processes use ${other.toFixed(2)} cores; the figures will be disturbed`);
      return other;
    }
    if (!announced) log(`${label}: waiting up to ${waitSeconds} s for other processes (${other.toFixed(2)} cores) to go quiet`);
    announced = true;
  }
}

/** Statistics for the planner, as autovacuum's ANALYZE gives a node that has run for a while. */
async function analyze(url: string): Promise<void> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    await db.query('ANALYZE');
  } finally {
    await db.end();
  }
}

/** Statements shown per run by --pg-statements. */
const topStatementsShown = 8;

async function resetStatements(url: string, create: boolean): Promise<void> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    if (create) await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await db.query('SELECT pg_stat_statements_reset()').catch((error: unknown) => {
      throw new UsageError(
        `--pg-statements: ${(error as Error).message}; add pg_stat_statements to this server's shared_preload_libraries ` +
          '(and restart it), or run without DATABASE_URL on the embedded Postgres, which loads it by itself',
      );
    });
  } finally {
    await db.end();
  }
}

/** The statements with the most execution time since the last reset, one line each. */
async function topStatements(url: string): Promise<string> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const result = await db.query<{ calls: string; total_ms: number; mean_ms: number; plan_ms: number; rows: string; wal_kb: string; query: string }>(
      `SELECT calls::text, total_exec_time AS total_ms, mean_exec_time AS mean_ms, total_plan_time AS plan_ms, rows::text,
              (wal_bytes / 1024)::bigint::text AS wal_kb, regexp_replace(query, '\\s+', ' ', 'g') AS query
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY total_exec_time + total_plan_time DESC LIMIT $1`,
      [topStatementsShown],
    );
    return result.rows
      .map((r) => `  ${r.calls.padStart(8)} calls ${r.total_ms.toFixed(0).padStart(7)} ms total ${r.mean_ms.toFixed(3).padStart(8)} ms mean ${r.plan_ms.toFixed(0).padStart(6)} ms planning ${r.rows.padStart(9)} rows ${r.wal_kb.padStart(8)} kB WAL  ${r.query.slice(0, 90)}`)
      .join('\n');
  } finally {
    await db.end();
  }
}

/** The postmaster of the bench database (the parent of our backend), to tell its CPU from any other Postgres. */
async function postmasterPid(url: string): Promise<number | undefined> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const r = await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const backend = r.rows[0]?.pid;
    return backend === undefined ? undefined : parentPid(backend);
  } finally {
    await db.end();
  }
}

// --- verification --------------------------------------------------------------------------

interface Verification {
  ok: boolean;
  reconcileClean: boolean;
  violations: { invariant: string; currency: string; bic: string; detail: string }[];
  settledSeenByClients: number;
  settledInDatabase: number;
  clientOutcomes: Record<string, number>;
  databaseStatuses: Record<string, number>;
  replaysSeen: number;
  clientErrors: Record<string, number>;
  /** Errors after which the node may have committed (the client cannot tell). */
  ambiguousClientErrors: Record<string, number>;
  nodeAlive: boolean;
  /** The node runs at CLEARING_LOG_LEVEL=warn: every line it wrote is a warning or worse. */
  nodeLogLines: string[];
  problems: string[];
}

async function verify(operator: Operator, databaseUrl: string, ledger: Ledger, node: ChildServer): Promise<Verification> {
  const problems: string[] = [];
  let reconcile: ReconcileResponse | undefined;
  try {
    reconcile = await operatorCall(operator, operator.reconcile, {});
  } catch (error) {
    problems.push(`Reconcile failed: ${(error as Error).message}`);
  }
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const databaseStatuses: Record<string, number> = {};
  try {
    const rows = await db.query<{ status: string; count: string }>('SELECT status, count(*) AS count FROM transfers GROUP BY status ORDER BY status');
    for (const row of rows.rows) databaseStatuses[row.status] = Number(row.count);
  } finally {
    await db.end();
  }
  const settledInDatabase = databaseStatuses['SETTLED'] ?? 0;
  const reconcileClean = reconcile?.clean === true;
  if (reconcile !== undefined && !reconcileClean) problems.push(`Reconcile is not clean: ${reconcile.violations.length} violation(s)`);
  if (ledger.settled !== settledInDatabase) {
    problems.push(`clients saw ${ledger.settled} SETTLED results but the database holds ${settledInDatabase} SETTLED transfers (difference ${settledInDatabase - ledger.settled})`);
  }
  const nodeAlive = !node.exited();
  if (!nodeAlive) problems.push('the node process exited during the run');
  return {
    ok: problems.length === 0,
    reconcileClean,
    violations: (reconcile?.violations ?? []).map((v) => ({ invariant: v.invariant, currency: v.currency, bic: v.bic, detail: v.detail })),
    settledSeenByClients: ledger.settled,
    settledInDatabase,
    clientOutcomes: Object.fromEntries(ledger.byStatus),
    databaseStatuses,
    replaysSeen: ledger.replayed,
    clientErrors: Object.fromEntries(ledger.errors),
    ambiguousClientErrors: Object.fromEntries(ledger.ambiguousErrors),
    nodeAlive,
    nodeLogLines: node.logs(),
    problems,
  };
}

// --- main ----------------------------------------------------------------------------------

async function databaseSettings(url: string): Promise<Record<string, string>> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const settings: Record<string, string> = {};
    for (const name of ['server_version', 'fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers']) {
      const r = await db.query<Record<string, string>>(`SHOW ${name}`);
      settings[name] = Object.values(r.rows[0] ?? {})[0] ?? '';
    }
    return settings;
  } finally {
    await db.end();
  }
}

async function run(options: BenchOptions): Promise<number> {
  const startedAt = new Date();
  let database: BenchDatabase | undefined;
  let node: ChildServer | undefined;
  let noop: ChildServer | undefined;
  const pools: ChannelPool[] = [];
  let operator: Operator | undefined;

  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    log('interrupted: killing the node and the no-op server, then tearing the database down');
    killChildrenSync();
    const close = database?.close().catch(() => undefined);
    void Promise.race([close, new Promise((r) => setTimeout(r, interruptedTeardownMs))]).then(() => process.exit(130));
  });

  const results: ReportedResult[] = [];
  let verification: Verification | undefined;
  let settings: Record<string, string> = {};
  try {
    log(process.env['DATABASE_URL'] ? 'creating a bench database on DATABASE_URL' : 'starting an embedded, durable Postgres in a temporary directory');
    database = await openDatabase(
      process.env['DATABASE_URL'],
      () => undefined,
      options.pgStatements ? ['-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track=all', '-c', 'pg_stat_statements.track_planning=on'] : [],
    );
    if (options.pgStatements) await resetStatements(database.url, true);
    settings = await databaseSettings(database.url);
    log(`database ${database.where} (Postgres ${settings['server_version']}, fsync=${settings['fsync']}, synchronous_commit=${settings['synchronous_commit']})`);

    node = await startClearingNode({
      databaseUrl: database.url,
      reservationTimeoutMs,
      submitBatchTransfersMax: Math.max(1_000, options.batchSize),
      env: options.nodeEnv,
      logFile: options.nodeLogFile,
      cpuProfileDir: options.nodeCpuProfileDir,
      flags: options.nodeFlags,
    });
    log(`clearing node (pid ${node.pid}) serving on ${node.address}`);
    const wantsCeiling = options.ceiling && (options.workloads.includes('unary') || options.workloads.includes('batch'));
    if (wantsCeiling) {
      noop = await startNoopServer();
      log(`no-op ceiling server (pid ${noop.pid}) serving on ${noop.address}`);
    }

    operator = new OperatorServiceClient(node.address, credentials.createInsecure());
    const banks = await createBanks(operator, 'A', options.banks, AcceptanceMode.ACCEPTANCE_MODE_AUTOMATIC, true);
    const creditors = options.workloads.includes('two-phase') ? await createBanks(operator, 'C', options.creditors, AcceptanceMode.ACCEPTANCE_MODE_EXPLICIT, false) : [];
    log(`created ${banks.length} banks${creditors.length > 0 ? `, ${creditors.length} EXPLICIT creditors` : ''}`);
    // Fresh banks for each fan-out run, so its subscribers start at the live edge rather than behind
    // every earlier workload's (or attempt's) confirmations.
    let fanoutRuns = 0;
    const freshFanoutBanks = async () => {
      // parseOptions keeps rounds × attempts within fanoutRunsMax.
      if (fanoutRuns >= fanoutRunsMax) throw new Error('out of bank prefixes for fan-out runs');
      const prefix = String.fromCharCode('F'.charCodeAt(0) + fanoutRuns++);
      return createBanks(operator as Operator, prefix, options.banks, AcceptanceMode.ACCEPTANCE_MODE_AUTOMATIC, true);
    };

    const nodePool = new ChannelPool(node.address, options.channels);
    pools.push(nodePool);
    const noopPool = noop === undefined ? undefined : new ChannelPool(noop.address, options.channels);
    if (noopPool !== undefined) pools.push(noopPool);
    const ledger = new Ledger(true);
    const databaseUrl = database.url;
    const groups = { nodePgid: node.pid, noopPgid: noop?.pid, postmasterPid: await postmasterPid(database.url) };
    const context: WorkloadContext = {
      options,
      factory: new TransferFactory(),
      progress,
      sampleCpu: () => sampleCpu(groups),
      waitQuiet: async (label) => {
        if (options.analyzeBeforeRuns) await analyze(databaseUrl);
        return waitQuiet(label, options.waitQuietSeconds, () => sampleCpu(groups));
      },
      beforeMeasuring: async () => {
        if (options.analyzeBeforeRuns) await analyze(databaseUrl);
        if (options.pgStatements) await resetStatements(databaseUrl, false);
      },
    };

    const rounds: WorkloadResult[][] = [];
    for (let round = 1; round <= options.rounds && !interrupted && !node.exited(); round++) {
      if (options.rounds > 1) log(`round ${round} of ${options.rounds}`);
      const raw: WorkloadResult[] = [];
      rounds.push(raw);
      for (const workload of options.workloads) {
        if (interrupted) break;
        const retry = (label: string, once: () => Promise<WorkloadResult>) => undisturbed(label, options.retryDisturbed, once);
        switch (workload) {
          case 'unary':
            if (noopPool !== undefined) raw.push(await retry('unary ceiling', () => runUnary(context, noopPool, banks, uncountedLedger, 'ceiling')));
            raw.push(await retry('unary', () => runUnary(context, nodePool, banks, ledger, 'node')));
            break;
          case 'batch':
            if (noopPool !== undefined) raw.push(await retry('batch ceiling', () => runBatch(context, noopPool, banks, uncountedLedger, 'ceiling')));
            raw.push(await retry('batch', () => runBatch(context, nodePool, banks, ledger, 'node')));
            break;
          case 'open':
            raw.push(await retry('open', () => runOpen(context, nodePool, banks, ledger)));
            break;
          case 'two-phase':
            raw.push(await retry('two-phase', () => runTwoPhase(context, nodePool, banks, creditors, ledger, reservationTimeoutMs)));
            break;
          case 'fanout':
            raw.push(await retry('fanout', async () => runFanout(context, nodePool, await freshFanoutBanks(), ledger)));
            break;
        }
        if (options.pgStatements) log(`${workload}: costliest statements since its measured window began\n${await topStatements(databaseUrl)}`);
        if (node.exited()) {
          log(`the node exited during ${workload}`);
          break;
        }
      }
    }
    results.push(...reportRounds(rounds, options));
    log('verifying: Reconcile, and SETTLED results seen by clients against the database');
    verification = await verify(operator, database.url, ledger, node);
  } finally {
    for (const pool of pools) pool.close();
    operator?.close();
    const nodeExit = await node?.stop();
    if (nodeExit !== undefined && nodeExit.code !== 0 && verification !== undefined) {
      verification.problems.push(`the node stopped with code ${nodeExit.code} signal ${nodeExit.signal}`);
      verification.ok = false;
    }
    await noop?.stop();
    await database?.close().catch((error: unknown) => log(`could not tear the database down: ${(error as Error).message}`));
  }

  const report = {
    startedAt: startedAt.toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? '',
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      platform: `${os.type()} ${os.release()}`,
    },
    database: { kind: database?.kind, where: database?.where, ...settings },
    options,
    results,
    verification,
  };
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(`\nclearing node benchmark — ${report.startedAt} — ${report.machine.cpus} × ${report.machine.cpuModel}, ${report.machine.node}\n`);
    process.stdout.write(`database: ${database?.kind} Postgres ${settings['server_version']} (fsync=${settings['fsync']}, synchronous_commit=${settings['synchronous_commit']}, full_page_writes=${settings['full_page_writes']})\n`);
    process.stdout.write(`banks ${options.banks}, channels ${options.channels}, ${options.durationSeconds} s measured per workload after ${options.warmupSeconds} s warm-up\n\n`);
    process.stdout.write(`${table(results)}\n\n`);
  }
  if (verification === undefined) {
    process.stderr.write('\nbench: FAILED — the run did not reach verification\n');
    return 1;
  }
  const summary =
    `Reconcile ${verification.reconcileClean ? 'clean' : 'NOT CLEAN'}; SETTLED seen by clients ${verification.settledSeenByClients}, ` +
    `in the database ${verification.settledInDatabase}; database statuses ${JSON.stringify(verification.databaseStatuses)}`;
  if (!verification.ok) {
    const banner = '='.repeat(78);
    process.stderr.write(
      `\n${banner}\nbench: FAILED VERIFICATION\n${verification.problems.map((p) => `  - ${p}`).join('\n')}\n  ${summary}\n` +
        `  client outcomes ${JSON.stringify(verification.clientOutcomes)}; replays ${verification.replaysSeen}\n` +
        `  client errors ${JSON.stringify(verification.clientErrors)}; of which ambiguous (may have committed) ${JSON.stringify(verification.ambiguousClientErrors)}\n` +
        verification.violations.map((v) => `  violation ${v.invariant} ${v.currency} ${v.bic}: ${v.detail}\n`).join('') +
        `  node output (${verification.nodeLogLines.length} lines, warn level and above):\n${verification.nodeLogLines.slice(-40).map((l) => `    ${l}`).join('\n')}\n${banner}\n`,
    );
    return 1;
  }
  if (!options.json) process.stdout.write(`verification: OK — ${summary}\n`);
  if (verification.nodeLogLines.length > 0) {
    process.stderr.write(`bench: the node wrote ${verification.nodeLogLines.length} warning/error lines; the last ones:\n${verification.nodeLogLines.slice(-10).join('\n')}\n`);
  }
  return 0;
}

async function main(): Promise<void> {
  let options: BenchOptions | undefined;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`bench: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  if (options === undefined) process.exit(0);
  const code = await run(options);
  // Exit explicitly: open handles (gRPC channels closing, timers) must not decide the exit code or delay it.
  process.exit(code);
}

main().catch((error: unknown) => {
  if (error instanceof UsageError) {
    process.stderr.write(`bench: ${error.message}\n`);
    killChildrenSync();
    process.exit(2);
  }
  process.stderr.write(`\nbench: FAILED — ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  killChildrenSync();
  process.exit(1);
});
