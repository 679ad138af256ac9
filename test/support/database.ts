// A private, migrated database per test file (or per test), on the server that
// test/global-setup.ts provides. Test files run in parallel; each gets its own database,
// so they never see each other's participants, positions or transfers.

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { ensureDatabase } from '../../src/store/embedded.js';
import { migrate } from '../../src/store/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the test Postgres server (embedded, or DATABASE_URL). */
    databaseAdminUrl: string;
  }
}

export interface TestDatabase {
  url: string;
  pool: pg.Pool;
  /** Ends the pool and drops the database, even with connections still open. Idempotent. */
  drop(): Promise<void>;
}

const testPoolConnectionsMax = 10;
/**
 * CREATE DATABASE copies template1 and fails with 55006 (object_in_use) while anyone is
 * connected to it; retry a few times rather than fail a test for that.
 */
const createAttemptsMax = 5;
const createRetryDelayMs = 200;

export function databaseAdminUrl(): string {
  const url = inject('databaseAdminUrl');
  if (typeof url !== 'string' || url === '') {
    throw new Error('no databaseAdminUrl provided: run tests through vitest with test/global-setup.ts');
  }
  return url;
}

/** The admin URL with its database replaced by `database`. */
export function databaseUrl(database: string): string {
  const url = new URL(databaseAdminUrl());
  url.pathname = `/${database}`;
  return url.toString();
}

/** A fresh, empty database (no migrations). Returns its URL and a function that drops it. */
export async function createBareDatabase(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `t_${randomBytes(8).toString('hex')}`;
  const adminUrl = databaseAdminUrl();
  for (let attempt = 1; ; attempt += 1) {
    try {
      const created = await ensureDatabase(adminUrl, name);
      if (!created) throw new Error(`test database ${name} already existed`);
      break;
    } catch (error) {
      const inUse = (error as { code?: unknown }).code === '55006';
      if (!inUse || attempt >= createAttemptsMax) throw error;
      await new Promise((resolve) => setTimeout(resolve, createRetryDelayMs * attempt));
    }
  }
  let dropped = false;
  return {
    name,
    url: databaseUrl(name),
    async drop(): Promise<void> {
      if (dropped) return;
      dropped = true;
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${admin.escapeIdentifier(name)} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    },
  };
}

/**
 * A pool for a test's own queries. Its databases are dropped WITH (FORCE), which
 * ends connections pool.end() may still be closing, and some tests end backends
 * on purpose: without an 'error' listener either would end the test worker.
 */
export function openTestPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  return pool;
}

/** A fresh database with every migration applied, and a pool on it. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const bare = await createBareDatabase();
  const pool = openTestPool(bare.url, testPoolConnectionsMax);
  try {
    await migrate(pool);
  } catch (error) {
    await pool.end();
    await bare.drop();
    throw error;
  }
  let ended = false;
  return {
    url: bare.url,
    pool,
    async drop(): Promise<void> {
      if (!ended) {
        ended = true;
        await pool.end();
      }
      await bare.drop();
    },
  };
}
