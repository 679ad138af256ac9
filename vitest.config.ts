import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Starts one embedded Postgres for the run unless DATABASE_URL points at a server.
    globalSetup: ['test/global-setup.ts'],
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    // Creating and migrating a database per file, or initdb in embedded tests, takes seconds.
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
