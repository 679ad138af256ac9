// Where the node's database is: DATABASE_URL, or an embedded Postgres in the data directory.
import assert from 'node:assert/strict';
import { chmod, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { ensureDatabase, startEmbeddedPostgres, type EmbeddedDatabase } from './embedded.js';

/** The database the node uses inside an embedded server. */
export const embeddedDatabaseName = 'clearing';

export interface DatabaseLocation {
  url: string;
  /** Set when the node started its own embedded Postgres (stopped with the node). */
  embedded: EmbeddedDatabase | undefined;
  /** True when the embedded database was created just now (a brand-new data directory or database). */
  createdNow: boolean;
}

export async function locateDatabase(options: {
  databaseUrl: string | undefined;
  dataDir: string;
  embeddedPort: number;
  log: (line: string) => void;
}): Promise<DatabaseLocation> {
  if (options.databaseUrl !== undefined) return { url: options.databaseUrl, embedded: undefined, createdNow: false };
  // As root, Postgres runs as the 'postgres' user, which must be able to pass
  // through the data directory to reach its own folder inside it.
  await mkdir(options.dataDir, { recursive: true });
  if (process.getuid?.() === 0) await chmod(options.dataDir, 0o711);
  const embedded = await startEmbeddedPostgres({
    dataDir: path.join(options.dataDir, 'postgres'),
    port: options.embeddedPort,
    log: options.log,
  });
  try {
    const createdNow = await ensureDatabase(embedded.connectionString('postgres'), embeddedDatabaseName);
    return { url: embedded.connectionString(embeddedDatabaseName), embedded, createdNow };
  } catch (error) {
    await embedded.stop();
    throw error;
  }
}

/** How the node's connections plan their statements (see createPool). */
export const nodePlanCacheMode = 'force_custom_plan';

/**
 * The URL without its startup options, and those options followed by the
 * plan cache mode: node-postgres lets a URL's `?options=` replace options set
 * beside it, so they travel as one setting. Set at startup, a setting the
 * server refuses fails the connection instead of leaving it with other plans.
 */
function withPlanCacheMode(url: string): { connectionString: string; options: string } {
  const mode = `-c plan_cache_mode=${nodePlanCacheMode}`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { connectionString: url, options: mode };
  }
  const given = parsed.searchParams.get('options');
  if (given === null || given === '') return { connectionString: url, options: mode };
  parsed.searchParams.delete('options');
  return { connectionString: parsed.toString(), options: `${given} ${mode}` };
}

/**
 * The node's pool. `onIdleError` hears of connections that fail while idle in
 * the pool (a Postgres restart, a failover, pg_terminate_backend, DROP DATABASE
 * WITH FORCE, or a backend ended while pool.end() still waits for it): the
 * pool discards them and connects anew at the next checkout, and without a
 * listener its 'error' event would end the process.
 *
 * Every statement is planned for its parameters and the tables as they are
 * (plan_cache_mode). A named statement otherwise switches to a generic plan
 * after five runs, cached for the connection's life until its table's
 * statistics change: on a freshly migrated database every table says it is
 * empty, and the generic plans were whole-table scans (the expiry sweep,
 * five times a second, read every transfer until autovacuum first analyzed
 * the table: 62 ms a sweep at 300,000 transfers). Planning these reads costs
 * ~0.1 ms; the settlement transaction sets the same for itself
 * (beginSettlementSql), whatever its connection says.
 */
export function createPool(url: string, max: number, onIdleError: (error: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    ...withPlanCacheMode(url),
    max,
    // A database that does not answer fails calls with UNAVAILABLE instead of hanging them.
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    // Bounds a statement stuck behind a lock held by a dead peer.
    statement_timeout: 30_000,
    // A settlement batch waiting this long for a row another node holds gives
    // up and is retried (55P03), instead of queueing everything behind it.
    lock_timeout: 2_000,
    // A node frozen mid-transaction (GC pause, SIGSTOP, partition) loses its
    // transaction, and with it its row locks, after this long.
    idle_in_transaction_session_timeout: 5_000,
    keepAlive: true,
    application_name: 'clearing-node',
    // Queries queued on one connection go out without waiting for the answer
    // before (protocol pipelining, node-postgres >= 8.21): a settlement batch
    // sends BEGIN, its lock and its read in one write, then its write and
    // COMMIT in another (queryInOrder). Each query still has its own result
    // or error, and a failure inside a transaction aborts the rest as before.
    pipeline: true,
  });
  pool.on('error', onIdleError);
  // Its connections, from connected until pg-pool has closed and removed them: endPool waits for them.
  const open = new Set<pg.PoolClient>();
  pool.on('connect', (client) => void open.add(client));
  pool.on('remove', (client) => void open.delete(client));
  openConnections.set(pool, open);
  return pool;
}

/** The open connections of each pool createPool made. */
const openConnections = new WeakMap<pg.Pool, Set<pg.PoolClient>>();

/** How long endPool waits, after pool.end(), for the pool's connections to close. */
export const poolCloseWaitMs = 5_000;

/**
 * Ends a pool createPool made and waits until its connections have closed,
 * up to poolCloseWaitMs after pool.end() returns (which itself waits, without
 * a limit, for connections still checked out to be released). pool.end()
 * returns once its clients are taken out of the pool, before their
 * connections have said goodbye; an embedded server stopped right after
 * would end them itself (57P01), and the pool would report that as a failed
 * idle connection. Connections already closing when it is called (an idle
 * timeout, a client released with an error) are waited for too.
 */
export async function endPool(pool: pg.Pool): Promise<void> {
  const open = openConnections.get(pool);
  assert(open !== undefined, 'endPool ends pools that createPool made');
  await pool.end();
  let timer: NodeJS.Timeout | undefined;
  let onRemove: (() => void) | undefined;
  const closed = new Promise<void>((resolve) => {
    // Registered after createPool's own 'remove' listener, so the set is up to date here.
    onRemove = () => {
      if (open.size === 0) resolve();
    };
    pool.on('remove', onRemove);
    onRemove();
  });
  await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, poolCloseWaitMs)))]);
  clearTimeout(timer);
  if (onRemove !== undefined) pool.off('remove', onRemove);
}
