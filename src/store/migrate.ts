// Schema migrations, in the style of graphile-worker: numbered plain-SQL files, applied in
// order, each in its own transaction, recorded in `schema_migrations`.
//
// Several clearing nodes may start against one database at the same moment. A session-level
// advisory lock, held on one dedicated connection for the whole run, makes them take turns:
// the first applies what is missing, the others wait and then find nothing to do.

import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import type pg from 'pg';

/**
 * Key of the advisory lock that serialises migration runs: the ASCII bytes of "clearing"
 * read as a big-endian int64 (0x636c656172696e67). Any other advisory lock in this project
 * must use a different key.
 */
export const migrationAdvisoryLockKey = 0x636c656172696e67n;

/** File names are `NNNN_snake_name.sql`; four digits bound the count. */
const migrationFilePattern = /^(\d{4})_([a-z0-9]+(?:_[a-z0-9]+)*)\.sql$/;
const migrationsMax = 9_999;
const defaultDirectory = new URL('./migrations/', import.meta.url);

export interface Migration {
  version: number;
  name: string;
  fileName: string;
  sql: string;
}

export interface MigrationResult {
  /** File names (`0002_transfers.sql`) applied by this call, in order. */
  applied: string[];
  /** Migrations that were already recorded when this call got the lock. */
  alreadyApplied: number;
}

export interface MigrateOptions {
  log?: (msg: string) => void;
  /** Directory of `NNNN_name.sql` files; defaults to `./migrations/` beside this module. Tests use others. */
  directory?: URL;
}

/**
 * Reads and validates the migration files: numbered 1, 2, 3… with no gap and no duplicate.
 * A `.sql` file whose name does not follow the pattern is an error, not silently skipped.
 */
export async function loadMigrations(directory: URL = defaultDirectory): Promise<Migration[]> {
  assert(directory.href.endsWith('/'), `migration directory URL must end with '/': ${directory.href}`);
  const fileNames = (await readdir(directory)).filter((fileName) => fileName.endsWith('.sql')).sort();
  assert(fileNames.length <= migrationsMax, `more than ${migrationsMax} migration files`);

  const migrations: Migration[] = [];
  for (const fileName of fileNames) {
    const match = migrationFilePattern.exec(fileName);
    if (match === null) {
      throw new Error(`migration file ${fileName} in ${directory.pathname} is not named NNNN_snake_name.sql`);
    }
    const version = Number(match[1]);
    const name = match[2] ?? '';
    const expected = migrations.length + 1;
    if (version !== expected) {
      const problem = version < expected ? 'duplicate' : 'gap before';
      throw new Error(
        `migration numbering in ${directory.pathname}: ${problem} ${fileName} (expected version ${expected}); ` +
          'versions must be 1, 2, 3… with no gaps or duplicates',
      );
    }
    const sql = await readFile(new URL(fileName, directory), 'utf8');
    migrations.push({ version, name, fileName, sql });
  }
  return migrations;
}

export async function migrate(pool: pg.Pool, options: MigrateOptions = {}): Promise<MigrationResult> {
  const log = options.log ?? (() => {});
  // Read files before taking the lock, so a broken checkout fails without touching the database.
  const migrations = await loadMigrations(options.directory);

  const client = await pool.connect();
  let clientBroken: Error | undefined;
  // pg-pool does not listen for errors of a checked-out client: without this a lost connection crashes the process.
  const onError = (error: Error) => {
    clientBroken ??= error;
  };
  client.on('error', onError);
  try {
    // Session-level lock: it survives the COMMITs below, and Postgres drops it if this
    // connection dies, so a crashed node cannot block the others forever.
    await client.query('SELECT pg_advisory_lock($1::bigint)', [migrationAdvisoryLockKey.toString()]);
    try {
      return await applyPending(client, migrations, log);
    } finally {
      try {
        await client.query('SELECT pg_advisory_unlock($1::bigint)', [migrationAdvisoryLockKey.toString()]);
      } catch (error) {
        // Destroying the connection below releases the lock as well.
        clientBroken = error instanceof Error ? error : new Error(String(error));
      }
    }
  } catch (error) {
    clientBroken ??= error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    // A client that failed mid-run may be inside an aborted transaction: do not reuse it.
    client.off('error', onError);
    client.release(clientBroken);
  }
}

async function applyPending(
  client: pg.PoolClient,
  migrations: readonly Migration[],
  log: (msg: string) => void,
): Promise<MigrationResult> {
  await client.query(`
    CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
  const recorded = await client.query<{ version: number; name: string }>(
    'SELECT version, name FROM schema_migrations ORDER BY version',
  );

  const byVersion = new Map(migrations.map((migration) => [migration.version, migration]));
  for (const row of recorded.rows) {
    const migration = byVersion.get(row.version);
    if (migration === undefined) {
      throw new Error(
        `database has migration ${row.version} (${row.name}) recorded but this code has no such file ` +
          `(it knows ${migrations.length}); the database is newer than the code — refusing to run`,
      );
    }
    if (migration.name !== row.name) {
      throw new Error(
        `database records migration ${row.version} as '${row.name}' but the file is ${migration.fileName}; ` +
          'the database and the code have different histories — refusing to run',
      );
    }
  }
  // Files are 1..n, so the recorded versions must be exactly 1..k: never apply an old
  // migration after a newer one.
  const alreadyApplied = recorded.rows.length;
  recorded.rows.forEach((row, index) => {
    assert.equal(row.version, index + 1, `schema_migrations is not a prefix 1..${alreadyApplied}: found ${row.version}`);
  });

  const applied: string[] = [];
  for (const migration of migrations.slice(alreadyApplied)) {
    const startedMs = Date.now();
    await client.query('BEGIN');
    try {
      // Simple query protocol (no parameters): a file may hold many statements.
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [
        migration.version,
        migration.name,
      ]);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`migration ${migration.fileName} failed and was rolled back: ${reason}`, { cause: error });
    }
    applied.push(migration.fileName);
    log(`applied migration ${migration.fileName} in ${Date.now() - startedMs} ms`);
  }
  if (applied.length === 0) log(`schema is up to date at version ${alreadyApplied}`);
  // New tables have no planner statistics until autovacuum's first ANALYZE;
  // give the planner some at once rather than a minute of guessing.
  else await client.query('ANALYZE');
  assert.equal(alreadyApplied + applied.length, migrations.length);
  return { applied, alreadyApplied };
}
