// The processes of a benchmark run besides the load generator itself: the
// database (an embedded, durable Postgres or a fresh database on DATABASE_URL's
// server), the clearing node under test, and the no-op ceiling server. Each
// runs as its own OS process, so the load generator never shares an event loop
// with what it measures.
//
// The node is started here rather than with test/support/process.ts because
// that launcher waits for the 'clearing node serving' line, which is logged at
// info level, and the benchmark runs the node at CLEARING_LOG_LEVEL=warn so that
// logging does not cost the node CPU under load. Readiness is instead a
// successful call.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { credentials, Metadata } from '@grpc/grpc-js';
import { OperatorServiceClient } from '../../src/gen/clearing/v1/operator_service.js';
import { ClearingServiceClient } from '../../src/gen/clearing/v1/clearing_service.js';
import { pickFreeLoopbackPort, ensureDatabase, startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/store/embedded.js';

export const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));

/** Compiling main.ts through tsx and migrating a fresh database take a few seconds on a cold 2-core machine. */
const startupTimeoutMs = 60_000;
/** Graceful stop (drain the settlement queue, close the pool) before SIGKILL. */
const stopTimeoutMs = 20_000;
/** Output lines kept per process, to explain a failure. */
const logLinesMax = 400;
/** How often readiness is probed while a server starts. */
const readinessProbeIntervalMs = 100;

// --- database ----------------------------------------------------------------------------

export interface BenchDatabase {
  /** URL of the database the node uses. */
  url: string;
  /** 'embedded' (durable, in a temporary directory) or 'external' (DATABASE_URL's server). */
  kind: 'embedded' | 'external';
  /** Where it lives, for the report (data directory or server without credentials). */
  where: string;
  /** Stops the embedded server and removes its directory, or drops the bench database. */
  close(): Promise<void>;
}

/** `bench_<UTC timestamp>_<random>`: fresh per run, never collides with another run on the same server. */
function benchDatabaseName(): string {
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `bench_${stamp}_${randomBytes(3).toString('hex')}`;
}

export async function openDatabase(databaseUrl: string | undefined, log: (line: string) => void, postgresFlags: string[] = []): Promise<BenchDatabase> {
  if (databaseUrl !== undefined && databaseUrl !== '') {
    const name = benchDatabaseName();
    const created = await ensureDatabase(databaseUrl, name);
    if (!created) throw new Error(`database ${name} already exists on ${redact(databaseUrl)}`);
    const url = new URL(databaseUrl);
    url.pathname = `/${name}`;
    return {
      url: url.toString(),
      kind: 'external',
      where: `${redact(databaseUrl).replace(/\/[^/]*$/, '')}/${name}`,
      async close() {
        const admin = new pg.Client({ connectionString: databaseUrl });
        await admin.connect();
        try {
          await admin.query(`DROP DATABASE IF EXISTS ${admin.escapeIdentifier(name)} WITH (FORCE)`);
        } finally {
          await admin.end();
        }
      },
    };
  }
  // A fresh cluster in a temporary directory, with the server's default, durable
  // settings (fsync, synchronous_commit and full_page_writes on): the figures are
  // for acknowledged-after-fsync transfers, as in production.
  const directory = await mkdtemp(path.join(os.tmpdir(), 'clearing-bench-'));
  // As root, Postgres runs as the 'postgres' user, which must be able to pass
  // through this directory to reach the data directory inside it (as src/store/database.ts does).
  if (process.getuid?.() === 0) await chmod(directory, 0o711);
  const dataDir = path.join(directory, 'postgres');
  let embedded: EmbeddedDatabase;
  try {
    embedded = await startEmbeddedPostgres({ dataDir, log, postgresFlags });
  } catch (error) {
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
  try {
    await ensureDatabase(embedded.connectionString('postgres'), 'bench');
  } catch (error) {
    await embedded.stop();
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
  return {
    url: embedded.connectionString('bench'),
    kind: 'embedded',
    where: dataDir,
    async close() {
      await embedded.stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

function redact(url: string): string {
  const u = new URL(url);
  u.password = '';
  return u.toString();
}

// --- child processes ---------------------------------------------------------------------

export interface ChildServer {
  name: string;
  address: string;
  /** PID of the server process; also its process group. */
  pid: number;
  /** The last output lines, oldest first (stderr lines prefixed `stderr: `). */
  logs(): string[];
  /** True once the process exited. */
  exited(): boolean;
  /** SIGTERM (graceful), SIGKILL to the whole group if it does not exit in time. Idempotent. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children = new Set<number>();
let exitHookInstalled = false;

/** Synchronous last resort when the bench exits: no server of ours may outlive it. */
export function killChildrenSync(): void {
  for (const pid of children) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  children.clear();
}

export const freeLoopbackPort = pickFreeLoopbackPort;

/** Our environment without anything that would steer the child (DATABASE_URL, CLEARING_*, NODE_OPTIONS). */
function childEnvironment(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || key.startsWith('CLEARING_') || key.startsWith('VITEST') || key === 'NODE_OPTIONS') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Spawns `node --import tsx <script>` (as `npm start` runs the node: the tsx
 * launcher would SIGKILL a busy child on SIGTERM instead of letting it drain)
 * as the leader of its own process group, and waits until `ready` succeeds.
 */
async function startChild(
  name: string,
  script: string,
  nodeFlags: string[],
  env: Record<string, string>,
  address: string,
  logFile: string | undefined,
  ready: (address: string) => Promise<boolean>,
): Promise<ChildServer> {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', killChildrenSync);
  }
  const child: ChildProcess = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', script], {
    cwd: repositoryRoot,
    env: childEnvironment(env),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: a SIGKILL must reach the server behind the tsx launcher.
    detached: true,
  });
  if (child.pid === undefined) {
    const error = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new Error(`could not start ${name} (node --import tsx ${script}): ${error.message}`);
  }
  const pid = child.pid;
  children.add(pid);
  const lines: string[] = [];
  const logStream = logFile === undefined ? undefined : createWriteStream(logFile, { flags: 'a' });
  const keep = (line: string) => {
    logStream?.write(`${line}\n`);
    lines.push(line);
    if (lines.length > logLinesMax) lines.splice(0, lines.length - logLinesMax);
  };
  const follow = (stream: NodeJS.ReadableStream | null, prefix: string) => {
    let pending = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      const split = (pending + chunk).split('\n');
      pending = (split.pop() ?? '').slice(-100_000);
      for (const line of split) if (line !== '') keep(prefix + line);
    });
  };
  follow(child.stdout, '');
  follow(child.stderr, 'stderr: ');

  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    }),
  );
  const killGroup = () => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  };
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (exit === undefined) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), stopTimeoutMs)));
        const first = await Promise.race([exited, timedOut]);
        clearTimeout(timer);
        if (first === 'timeout') {
          keep(`bench: ${name} did not stop within ${stopTimeoutMs} ms after SIGTERM; SIGKILL to its process group`);
          killGroup();
        }
      }
      const result = await exited;
      logStream?.end();
      // Anything the server started in its group (e.g. tsx's esbuild service) goes with it.
      const deadline = Date.now() + 10_000;
      while (processGroupAlive(pid) && Date.now() < deadline) await delay(20);
      if (processGroupAlive(pid)) killGroup();
      children.delete(pid);
      return result;
    })());

  const deadline = Date.now() + startupTimeoutMs;
  for (;;) {
    if (exit !== undefined) {
      children.delete(pid);
      throw new Error(`${name} exited (code ${exit.code}, signal ${exit.signal}) before serving; its output:\n${lines.join('\n')}`);
    }
    if (await ready(address).catch(() => false)) break;
    if (Date.now() > deadline) {
      killGroup();
      await exited;
      children.delete(pid);
      throw new Error(`${name} did not serve on ${address} within ${startupTimeoutMs} ms; its output:\n${lines.join('\n')}`);
    }
    await delay(readinessProbeIntervalMs);
  }
  return { name, address, pid, logs: () => [...lines], exited: () => exit !== undefined, stop };
}

/** One probe call with a short deadline; any answer at all (even an error status from the handler) means serving. */
function probe(call: (deadline: Date, done: (ok: boolean) => void) => void): Promise<boolean> {
  return new Promise((resolve) => call(new Date(Date.now() + 1_000), resolve));
}

export interface NodeSettings {
  databaseUrl: string;
  reservationTimeoutMs: number;
  submitBatchTransfersMax: number;
  /** Further CLEARING_* variables; they win over the bench's. */
  env: Record<string, string>;
  /** Append the node's output here as well. */
  logFile: string | undefined;
  /** Run the node with --cpu-prof, writing the profile here. */
  cpuProfileDir: string | undefined;
  /** Further Node.js or V8 flags (--node-flag), before the node's own. */
  flags: string[];
}

/** The clearing node exactly as `npm start` runs it (`node --import tsx src/main.ts`). */
export async function startClearingNode(settings: NodeSettings): Promise<ChildServer> {
  const port = await freeLoopbackPort();
  const address = `127.0.0.1:${port}`;
  return startChild(
    'clearing node',
    'src/main.ts',
    [...settings.flags, ...(settings.cpuProfileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${path.resolve(settings.cpuProfileDir)}`])],
    {
      DATABASE_URL: settings.databaseUrl,
      CLEARING_GRPC_ADDRESS: address,
      CLEARING_LOG_LEVEL: 'warn',
      CLEARING_SEED_DEMO: 'never',
      CLEARING_NODE_ID: 'bench-node',
      CLEARING_RESERVATION_TIMEOUT_MS: String(settings.reservationTimeoutMs),
      CLEARING_SUBMIT_BATCH_TRANSFERS_MAX: String(settings.submitBatchTransfersMax),
      // Metrics stay on, as in production, on a port of their own so that no other node on the machine collides.
      CLEARING_METRICS_ADDRESS: `127.0.0.1:${await freeLoopbackPort()}`,
      ...settings.env,
    },
    address,
    settings.logFile,
    (target) =>
      probe((deadline, done) => {
        const client = new OperatorServiceClient(target, credentials.createInsecure());
        const metadata = new Metadata();
        metadata.set('x-principal', 'operator/bench');
        client.listParticipants({ pageSize: 1, pageToken: '' }, metadata, { deadline }, (error) => {
          client.close();
          done(error === null);
        });
      }),
  );
}

/** test/bench/noop-server.ts: ClearingService with canned answers, for the ceiling runs. */
export async function startNoopServer(): Promise<ChildServer> {
  const port = await freeLoopbackPort();
  const address = `127.0.0.1:${port}`;
  return startChild('no-op server', 'test/bench/noop-server.ts', [], { BENCH_NOOP_ADDRESS: address }, address, undefined, (target) =>
    probe((deadline, done) => {
      const client = new ClearingServiceClient(target, credentials.createInsecure());
      client.getPosition({ currency: '' }, new Metadata(), { deadline }, (error) => {
        client.close();
        // UNIMPLEMENTED comes from the server, so it is up.
        done(error === null || error.code === 12);
      });
    }),
  );
}

// --- CPU accounting ----------------------------------------------------------------------

/** Kernel clock ticks per second for /proc/<pid>/stat utime and stime (USER_HZ, 100 on Linux). */
const clockTicksPerSecond = 100;

export type CpuGroup = 'load' | 'node' | 'postgres' | 'noop' | 'other';

export interface CpuSample {
  atMs: number;
  /** Cumulative CPU seconds of every live process, by pid, with its group. */
  processes: Map<number, { group: CpuGroup; seconds: number }>;
}

/** True while any process of group `pgid` is alive (zombies excluded). */
function processGroupAlive(pgid: number): boolean {
  for (const entry of safeReaddir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(entry);
    if (fields !== undefined && Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true;
  }
  return false;
}

function safeReaddir(directory: string): string[] {
  try {
    return readdirSync(directory);
  } catch {
    return [];
  }
}

/** The fields after the parenthesised command name: state ppid pgrp ... (utime is [11], stime [12]). */
function statFields(pid: string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined; // Exited while we looked.
  }
}

function commandOf(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The parent of `pid` from /proc, or undefined. */
export function parentPid(pid: number): number | undefined {
  const fields = statFields(String(pid));
  return fields === undefined ? undefined : Number(fields[1]);
}

/**
 * CPU time of every process on the machine, grouped: this process (the load
 * generator), the node's and the no-op server's process groups, the bench
 * database's Postgres (its postmaster and every child of it), and everything
 * else (including any other Postgres on the machine). Linux only; elsewhere
 * the sample is empty.
 */
export function sampleCpu(groups: { nodePgid?: number; noopPgid?: number; postmasterPid?: number }): CpuSample {
  const processes = new Map<number, { group: CpuGroup; seconds: number }>();
  for (const entry of safeReaddir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(entry);
    if (fields === undefined) continue;
    const pid = Number(entry);
    const pgid = Number(fields[2]);
    const seconds = (Number(fields[11]) + Number(fields[12])) / clockTicksPerSecond;
    let group: CpuGroup = 'other';
    if (pid === process.pid) group = 'load';
    else if (groups.nodePgid !== undefined && pgid === groups.nodePgid) group = 'node';
    else if (groups.noopPgid !== undefined && pgid === groups.noopPgid) group = 'noop';
    else if (groups.postmasterPid !== undefined && (pid === groups.postmasterPid || Number(fields[1]) === groups.postmasterPid)) group = 'postgres';
    else if (groups.postmasterPid === undefined && commandOf(entry) === 'postgres') group = 'postgres';
    processes.set(pid, { group, seconds });
  }
  return { atMs: performance.now(), processes };
}

/** Cores used per group between two samples (CPU seconds / wall seconds). */
export function cpuBetween(from: CpuSample, to: CpuSample): Record<CpuGroup, number> {
  const wallSeconds = (to.atMs - from.atMs) / 1000;
  const used: Record<CpuGroup, number> = { load: 0, node: 0, postgres: 0, noop: 0, other: 0 };
  if (wallSeconds <= 0) return used;
  for (const [pid, now] of to.processes) {
    // A process born during the window counts from zero.
    const before = from.processes.get(pid)?.seconds ?? 0;
    used[now.group] += Math.max(0, now.seconds - before);
  }
  for (const group of Object.keys(used) as CpuGroup[]) used[group] = Math.round((used[group] / wallSeconds) * 100) / 100;
  return used;
}
