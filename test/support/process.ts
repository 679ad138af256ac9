// Starts a clearing node as a separate OS process, exactly as `npm start` runs it
// (`node --import tsx src/main.ts`), on a database the test names. Fault tests
// need this: a node inside the test worker cannot be killed with SIGKILL, and two
// nodes in one process would share an event loop instead of racing each other
// through Postgres.
//
// Every node is spawned as the leader of its own process group and
// `kill('SIGKILL')` kills the whole group, so nothing it started outlives it.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));

/** Compiling main.ts through tsx and migrating a fresh database take a few seconds on a cold 2-core machine. */
const startupTimeoutMsDefault = 60_000;
/** Graceful shutdown: stop gRPC, drain the settlement queue, close the pool. */
const stopTimeoutMsDefault = 20_000;
/** Log lines kept per node to explain a failure. */
const logLinesMaxDefault = 200;
/** A partial line longer than this is not a pino line; it is cut rather than grown without bound. */
const pendingLineCharactersMax = 1_000_000;
/** How long kill() waits for every process of the group to be gone after SIGKILL. */
const groupGoneTimeoutMs = 10_000;

export interface NodeProcessOptions {
  /** Postgres URL of the database the node uses (and migrates on start). */
  databaseUrl: string;
  /** CLEARING_NODE_ID: names the node in its logs and in settlement_batches.node_id. */
  name: string;
  /** Further environment variables, e.g. CLEARING_BATCH_WAIT_MS. */
  env?: Record<string, string>;
  startupTimeoutMs?: number;
  /** How many of the most recent output lines (stdout and stderr) to keep. */
  logLinesMax?: number;
}

export interface NodeExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface NodeProcess {
  name: string;
  /** 127.0.0.1:<port> from the node's 'clearing node serving' log line. */
  address: string;
  /** PID of the tsx launcher; also the id of the process group that holds the node. */
  pid: number;
  /** Sends `signal`: SIGKILL to the whole process group, any other signal to the launcher, which relays it. */
  kill(signal: NodeJS.Signals): void;
  /** Resolves once the launcher exited (after a SIGKILL, also once every process of its group is gone). */
  exited: Promise<NodeExit>;
  /** The last output lines, oldest first, stderr lines prefixed `stderr: `. */
  logs(): string[];
  /** Parsed pino lines among logs() (other lines skipped). */
  logEntries(): Record<string, unknown>[];
  /** Graceful SIGTERM; SIGKILL to the group if it does not exit within `timeoutMs`. Idempotent. */
  stop(timeoutMs?: number): Promise<NodeExit>;
}

const running = new Set<{ pid: number; done: boolean }>();
let exitHookInstalled = false;

/** Synchronous last resort: the test worker is exiting; no child of ours may outlive it. */
function killAllSync(): void {
  for (const child of running) {
    if (child.done) continue;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', killAllSync);
}

/** Kills every node process this worker started and still runs; for afterAll. */
export async function stopAllNodeProcesses(): Promise<void> {
  killAllSync();
  const deadline = Date.now() + groupGoneTimeoutMs;
  for (const child of running) {
    while (processGroupAlive(child.pid) && Date.now() < deadline) await delay(20);
  }
}

/** The environment of a node: ours without DATABASE_URL, CLEARING_* (the test decides those) or vitest's own. */
function nodeEnvironment(options: NodeProcessOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || key.startsWith('CLEARING_') || key.startsWith('VITEST')) continue;
    env[key] = value;
  }
  return {
    ...env,
    DATABASE_URL: options.databaseUrl,
    CLEARING_GRPC_ADDRESS: '127.0.0.1:0',
    CLEARING_LOG_LEVEL: 'info',
    CLEARING_SEED_DEMO: 'never',
    // Many nodes run at once in tests: no fixed metrics port.
    CLEARING_METRICS_ADDRESS: 'none',
    CLEARING_NODE_ID: options.name,
    ...options.env,
  };
}

/**
 * True while any process of group `pgid` is alive (zombies excluded: in a
 * container nobody may reap a node whose launcher died with it).
 */
export function processGroupAlive(pgid: number): boolean {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // Exited while we looked.
    }
    // Fields after the parenthesised command name: state ppid pgrp ...
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true;
  }
  return false;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function startNodeProcess(options: NodeProcessOptions): Promise<NodeProcess> {
  const startupTimeoutMs = options.startupTimeoutMs ?? startupTimeoutMsDefault;
  const logLinesMax = options.logLinesMax ?? logLinesMaxDefault;
  installExitHook();

  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: repositoryRoot,
    env: nodeEnvironment(options),
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that SIGKILL reaches the node behind the launcher.
    detached: true,
  });
  if (child.pid === undefined) {
    // spawn failed synchronously (e.g. tsx missing); the 'error' event says why.
    const error = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw new Error(`could not start the node: ${error.message}`);
  }
  const pid = child.pid;
  const tracked = { pid, done: false };
  running.add(tracked);

  const lines: string[] = [];
  const keep = (line: string) => {
    lines.push(line);
    if (lines.length > logLinesMax) lines.splice(0, lines.length - logLinesMax);
  };
  let onServing: ((address: string) => void) | undefined;

  let pendingStdout = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    const split = (pendingStdout + chunk).split('\n');
    pendingStdout = (split.pop() ?? '').slice(-pendingLineCharactersMax);
    for (const line of split) {
      if (line === '') continue;
      keep(line);
      if (!line.includes('clearing node serving')) continue;
      try {
        const entry = JSON.parse(line) as { msg?: unknown; address?: unknown };
        if (entry.msg === 'clearing node serving' && typeof entry.address === 'string') onServing?.(entry.address);
      } catch {
        // Not a pino line.
      }
    }
  });
  let pendingStderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    const split = (pendingStderr + chunk).split('\n');
    pendingStderr = (split.pop() ?? '').slice(-pendingLineCharactersMax);
    for (const line of split) if (line !== '') keep(`stderr: ${line}`);
  });

  const logs = () => [...lines, ...(pendingStdout === '' ? [] : [pendingStdout]), ...(pendingStderr === '' ? [] : [`stderr: ${pendingStderr}`])];
  const explain = () => `node ${options.name} (pid ${pid}), last ${logLinesMax} output lines:\n${logs().join('\n')}`;

  let killedGroup = false;
  const launcherExited = new Promise<NodeExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const exited = launcherExited.then(async (exit) => {
    // After a SIGKILL the node behind the launcher dies with it; wait until the
    // kernel has really taken it down, so its sockets are closed when we resume.
    if (killedGroup) {
      const deadline = Date.now() + groupGoneTimeoutMs;
      while (processGroupAlive(pid) && Date.now() < deadline) await delay(10);
    }
    tracked.done = true;
    running.delete(tracked);
    return exit;
  });

  const kill = (signal: NodeJS.Signals) => {
    if (tracked.done) return;
    if (signal === 'SIGKILL') {
      killedGroup = true;
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
      return;
    }
    // To the node alone: main.ts handles each signal once.
    child.kill(signal);
  };

  let stopping: Promise<NodeExit> | undefined;
  const stop = (timeoutMs = stopTimeoutMsDefault) =>
    (stopping ??= (async () => {
      if (tracked.done) return exited;
      kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
      const first = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      if (first !== 'timeout') return first;
      kill('SIGKILL');
      return exited;
    })());

  try {
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no 'clearing node serving' line within ${startupTimeoutMs} ms from ${explain()}`)), startupTimeoutMs);
      onServing = (found) => {
        clearTimeout(timer);
        resolve(found);
      };
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`${error.message} from ${explain()}`));
      });
      void launcherExited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`exited (code ${code}, signal ${signal}) before serving: ${explain()}`));
      });
    });
    onServing = undefined;
    return {
      name: options.name,
      address,
      pid,
      kill,
      exited,
      logs,
      logEntries: () =>
        logs().flatMap((line) => {
          if (!line.startsWith('{')) return [];
          try {
            return [JSON.parse(line) as Record<string, unknown>];
          } catch {
            return [];
          }
        }),
      stop,
    };
  } catch (error) {
    kill('SIGKILL');
    await exited;
    throw error;
  }
}
