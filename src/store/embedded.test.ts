import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ensureDatabase, startEmbeddedPostgres, type EmbeddedDatabase } from './embedded.js';

const runningAsRoot = process.getuid?.() === 0;

async function query<Row extends pg.QueryResultRow>(url: string, sql: string): Promise<Row[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<Row>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('embedded Postgres', () => {
  let parent: string;
  let dataDir: string;
  let database: EmbeddedDatabase | undefined;
  const logLines: string[] = [];
  const log = (line: string): void => {
    logLines.push(line);
  };

  beforeAll(async () => {
    parent = await mkdtemp(path.join(os.tmpdir(), 'clearing-embedded-'));
    // mkdtemp makes the directory 0700; as root, Postgres runs as `postgres` and must enter it.
    await chmod(parent, 0o711);
    dataDir = path.join(parent, 'data');
  });
  afterAll(async () => {
    await database?.stop();
    await rm(parent, { recursive: true, force: true });
  });

  test('initialises, listens on loopback only, keeps fsync on, creates databases', async () => {
    database = await startEmbeddedPostgres({ dataDir, log });

    expect(database.port).toBeGreaterThan(0);
    const url = database.connectionString('postgres');
    expect(url).toBe(`postgres://postgres:postgres@127.0.0.1:${database.port}/postgres`);
    const [settings] = await query<{ listen: string; fsync: string; encoding: string }>(
      url,
      "SELECT current_setting('listen_addresses') AS listen, current_setting('fsync') AS fsync, " +
        'pg_encoding_to_char(encoding) AS encoding FROM pg_database WHERE datname = current_database()',
    );
    expect(settings).toEqual({ listen: '127.0.0.1', fsync: 'on', encoding: 'UTF8' });

    expect(await ensureDatabase(url, 'clearing')).toBe(true);
    expect(await ensureDatabase(url, 'clearing')).toBe(false);
    await query(database.connectionString('clearing'), 'CREATE TABLE participants (bic text PRIMARY KEY)');
    await query(database.connectionString('clearing'), "INSERT INTO participants VALUES ('BANKDEFFXXX')");
  });

  test('ensureDatabase: concurrent calls create the database once; bad names are refused', async () => {
    if (database === undefined) throw new Error('not started');
    const url = database.connectionString('postgres');

    const created = await Promise.all([1, 2, 3, 4].map(() => ensureDatabase(url, 'raced')));

    expect(created.filter(Boolean)).toHaveLength(1);
    await expect(ensureDatabase(url, 'Robert"; DROP DATABASE postgres; --')).rejects.toThrow(/invalid database name/);
    await expect(ensureDatabase(url, 'x'.repeat(64))).rejects.toThrow(/invalid database name/);
  });

  test('refuses to start a second server on a data directory in use', async () => {
    await expect(startEmbeddedPostgres({ dataDir })).rejects.toThrow(/in use by process/);
  });

  test('keeps data across a stop and a start on the same directory', async () => {
    if (database === undefined) throw new Error('not started');
    await database.stop();
    await database.stop(); // idempotent
    database = undefined;

    database = await startEmbeddedPostgres({ dataDir, log });

    const rows = await query<{ bic: string }>(database.connectionString('clearing'), 'SELECT bic FROM participants');
    expect(rows).toEqual([{ bic: 'BANKDEFFXXX' }]);
  });

  test('starts despite a stale postmaster.pid whose PID now belongs to another live process', async () => {
    if (database === undefined) throw new Error('not started');
    await database.stop();
    database = undefined;
    // After a container restart the recorded PID is often reused. Postgres itself refuses
    // to start when that PID is alive and signalable by it, so use a process of its user.
    const postgresUser = runningAsRoot
      ? { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })) }
      : {};
    const impostor: ChildProcess = spawn('sleep', ['60'], { ...postgresUser, stdio: 'ignore' });
    try {
      if (impostor.pid === undefined) throw new Error('could not spawn sleep');
      await writeFile(path.join(dataDir, 'postmaster.pid'), `${impostor.pid}\n${dataDir}\n`);

      database = await startEmbeddedPostgres({ dataDir, log });

      const rows = await query<{ bic: string }>(database.connectionString('clearing'), 'SELECT bic FROM participants');
      expect(rows).toEqual([{ bic: 'BANKDEFFXXX' }]);
      expect(logLines.some((line) => line.includes('removed stale'))).toBe(true);
    } finally {
      impostor.kill();
    }
  });

  test('starts despite an empty postmaster.pid left by a crash during start-up', async () => {
    if (database === undefined) throw new Error('not started');
    await database.stop();
    database = undefined;
    await writeFile(path.join(dataDir, 'postmaster.pid'), '');

    database = await startEmbeddedPostgres({ dataDir, log });

    expect(await query(database.connectionString('clearing'), 'SELECT 1 AS one')).toEqual([{ one: 1 }]);
  });

  test('a fixed port that is taken gives an error with the server log', async () => {
    if (database === undefined) throw new Error('not started');
    const other = await mkdtemp(path.join(parent, 'other-'));
    await chmod(other, 0o711);
    await expect(startEmbeddedPostgres({ dataDir: other, port: database.port })).rejects.toThrow(
      /failed to start on 127\.0\.0\.1:\d+[\s\S]*could not (bind|create)/,
    );
  });

  test.runIf(runningAsRoot)('as root, refuses a data directory the postgres user cannot reach', async () => {
    const hidden = await mkdtemp(path.join(parent, 'hidden-')); // mode 0700, owned by root
    await expect(startEmbeddedPostgres({ dataDir: path.join(hidden, 'data') })).rejects.toThrow(/cannot enter/);
  });
});
