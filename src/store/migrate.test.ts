import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createBareDatabase, createTestDatabase, databaseAdminUrl, openTestPool, type TestDatabase } from '../../test/support/database.js';
import { loadMigrations, migrate, migrationAdvisoryLockKey } from './migrate.js';

/** Writes migration files into a fresh temporary directory and returns its URL. */
async function migrationDirectory(files: Record<string, string>): Promise<URL> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'clearing-migrations-'));
  temporaryDirectories.push(directory);
  for (const [fileName, sql] of Object.entries(files)) {
    await writeFile(path.join(directory, fileName), sql);
  }
  return pathToFileURL(`${directory}/`);
}
const temporaryDirectories: string[] = [];
afterAll(async () => {
  await Promise.all(temporaryDirectories.map((directory) => rm(directory, { recursive: true, force: true })));
});

async function recordedVersions(pool: pg.Pool): Promise<Array<{ version: number; name: string }>> {
  const result = await pool.query<{ version: number; name: string }>(
    'SELECT version, name FROM schema_migrations ORDER BY version',
  );
  return result.rows;
}

describe('migrate on the project migrations', () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database.drop();
  });

  test('records every migration file, in order', async () => {
    const files = await loadMigrations();
    expect(files.length).toBeGreaterThan(0);
    expect(await recordedVersions(database.pool)).toEqual(
      files.map((file) => ({ version: file.version, name: file.name })),
    );
  });

  test('a second run applies nothing', async () => {
    const files = await loadMigrations();
    const result = await migrate(database.pool);
    expect(result).toEqual({ applied: [], alreadyApplied: files.length });
  });

  test('releases its advisory lock', async () => {
    const held = await database.pool.query(
      `SELECT count(*)::int AS held FROM pg_locks
        WHERE locktype = 'advisory' AND ((classid::bigint << 32) | objid::bigint) = $1::bigint`,
      [migrationAdvisoryLockKey.toString()],
    );
    expect(held.rows[0]).toEqual({ held: 0 });
  });

  test('refuses a database that records a version with no file', async () => {
    const files = await loadMigrations();
    const future = files.length + 1;
    await database.pool.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [future, 'from_the_future']);
    try {
      await expect(migrate(database.pool)).rejects.toThrow(/database is newer than the code/);
    } finally {
      await database.pool.query('DELETE FROM schema_migrations WHERE version = $1', [future]);
    }
  });

  test('refuses a database that records another name for a version', async () => {
    await database.pool.query("UPDATE schema_migrations SET name = 'renamed' WHERE version = 1");
    try {
      await expect(migrate(database.pool)).rejects.toThrow(/different histories/);
    } finally {
      const files = await loadMigrations();
      await database.pool.query('UPDATE schema_migrations SET name = $1 WHERE version = 1', [files[0]?.name]);
    }
  });
});

describe('createTestDatabase', () => {
  test('parallel callers each get their own migrated database', async () => {
    const files = await loadMigrations();
    const databases = await Promise.all(Array.from({ length: 8 }, () => createTestDatabase()));
    try {
      expect(new Set(databases.map((database) => database.url)).size).toBe(8);
      for (const database of databases) {
        expect(await recordedVersions(database.pool)).toHaveLength(files.length);
      }
    } finally {
      await Promise.all(databases.map((database) => database.drop()));
    }
    const admin = new pg.Client({ connectionString: databaseAdminUrl() });
    await admin.connect();
    try {
      const names = databases.map((database) => new URL(database.url).pathname.slice(1));
      const left = await admin.query('SELECT datname FROM pg_database WHERE datname = ANY($1)', [names]);
      expect(left.rows).toEqual([]);
    } finally {
      await admin.end();
    }
  });
});

describe('migrate on a bare database', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function bareDatabasePools(count: number): Promise<pg.Pool[]> {
    const bare = await createBareDatabase();
    cleanups.push(() => bare.drop());
    const pools = Array.from({ length: count }, () => {
      return openTestPool(bare.url, 2);
    });
    cleanups.push(async () => {
      await Promise.all(pools.map((pool) => pool.end()));
    });
    return pools;
  }

  // Each file fails if applied twice (CREATE TABLE without IF NOT EXISTS), and the sleep
  // keeps the first run inside its lock while the others arrive.
  const slowMigrations = {
    '0001_participants.sql': 'CREATE TABLE participants (bic text PRIMARY KEY);\nSELECT pg_sleep(0.2);',
    '0002_positions.sql': 'CREATE TABLE positions (bic text REFERENCES participants, balance bigint NOT NULL);',
    '0003_seed.sql': "INSERT INTO participants VALUES ('BANKDEFFXXX');\nSELECT pg_sleep(0.1);",
  };

  test('concurrent runs from two nodes apply each version exactly once', async () => {
    const directory = await migrationDirectory(slowMigrations);
    const [first, second, third] = await bareDatabasePools(3);
    if (first === undefined || second === undefined || third === undefined) throw new Error('pools');

    const results = await Promise.all([migrate(first, { directory }), migrate(second, { directory }), migrate(third, { directory })]);

    const allApplied = results.flatMap((result) => result.applied).sort();
    expect(allApplied).toEqual(Object.keys(slowMigrations).sort());
    // Exactly one run did the work; the others waited on the lock and found everything applied.
    expect(results.filter((result) => result.applied.length > 0)).toHaveLength(1);
    expect(results.filter((result) => result.alreadyApplied === 3)).toHaveLength(2);
    expect((await recordedVersions(first)).map((row) => row.version)).toEqual([1, 2, 3]);
    expect((await first.query('SELECT count(*)::int AS n FROM participants')).rows[0]).toEqual({ n: 1 });
  });

  test('concurrent runs of the project migrations on a fresh database', async () => {
    const [first, second] = await bareDatabasePools(2);
    if (first === undefined || second === undefined) throw new Error('pools');
    const files = await loadMigrations();

    const results = await Promise.all([migrate(first), migrate(second)]);

    expect(results.flatMap((result) => result.applied).sort()).toEqual(files.map((file) => file.fileName));
    expect(results.map((result) => result.alreadyApplied).sort()).toEqual([0, files.length]);
    const versions = (await recordedVersions(first)).map((row) => row.version);
    expect(versions).toEqual(files.map((file) => file.version));
  });

  test('applies only the new files after an upgrade', async () => {
    const [pool] = await bareDatabasePools(1);
    if (pool === undefined) throw new Error('pool');
    const older = await migrationDirectory({ '0001_participants.sql': slowMigrations['0001_participants.sql'] });
    const newer = await migrationDirectory(slowMigrations);
    const log: string[] = [];

    expect(await migrate(pool, { directory: older })).toEqual({ applied: ['0001_participants.sql'], alreadyApplied: 0 });
    expect(await migrate(pool, { directory: newer, log: (line) => log.push(line) })).toEqual({
      applied: ['0002_positions.sql', '0003_seed.sql'],
      alreadyApplied: 1,
    });
    expect(log).toHaveLength(2);
  });

  test('a failing migration is rolled back and not recorded; earlier ones stay', async () => {
    const [pool] = await bareDatabasePools(1);
    if (pool === undefined) throw new Error('pool');
    const directory = await migrationDirectory({
      '0001_participants.sql': 'CREATE TABLE participants (bic text PRIMARY KEY);',
      '0002_broken.sql': 'CREATE TABLE positions (balance bigint);\nSELECT * FROM no_such_table;',
    });

    await expect(migrate(pool, { directory })).rejects.toThrow(/0002_broken\.sql failed and was rolled back/);

    expect(await recordedVersions(pool)).toEqual([{ version: 1, name: 'participants' }]);
    const positions = await pool.query("SELECT to_regclass('positions') AS table");
    expect(positions.rows[0]).toEqual({ table: null });
    // The lock was released despite the failure: another run gets it at once.
    await expect(migrate(pool, { directory })).rejects.toThrow(/0002_broken/);
  });

  test.each([
    ['a gap', { '0001_a.sql': 'SELECT 1;', '0003_c.sql': 'SELECT 1;' }, /gap before 0003_c\.sql/],
    ['a duplicate number', { '0001_a.sql': 'SELECT 1;', '0001_b.sql': 'SELECT 1;' }, /duplicate 0001_b\.sql/],
    ['not starting at 1', { '0002_b.sql': 'SELECT 1;' }, /gap before 0002_b\.sql/],
    ['a badly named file', { '0001_a.sql': 'SELECT 1;', '2_Bad-Name.sql': 'SELECT 1;' }, /not named NNNN_snake_name/],
  ])('refuses migration files with %s, before touching the database', async (_case, files, message) => {
    const [pool] = await bareDatabasePools(1);
    if (pool === undefined) throw new Error('pool');
    const directory = await migrationDirectory(files);

    await expect(migrate(pool, { directory })).rejects.toThrow(message);

    const table = await pool.query("SELECT to_regclass('schema_migrations') AS table");
    expect(table.rows[0]).toEqual({ table: null });
  });
});
