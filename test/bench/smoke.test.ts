// CI's smoke of `npm run bench` (issue 7): a few seconds of every workload and
// of the ceiling, no performance thresholds — only that the benchmark still
// runs end to end and that its own verification (Reconcile clean, SETTLED
// results seen by the clients = SETTLED transfers in the database) passes, so
// the benchmark never rots. It runs on the test server (DATABASE_URL or the
// suite's embedded Postgres): the bench creates its own database there and
// drops it.
import { spawn } from 'node:child_process';
import { describe, expect, test } from 'vitest';
import { databaseAdminUrl } from '../support/database.js';
import { repositoryRoot } from './processes.js';

/** Two processes to start plus seven one-second runs; generous for a loaded 2-core CI machine. */
const smokeTimeoutMs = 180_000;

interface SmokeReport {
  results: { workload: string; target: string; callsPerSecond: number; errors: Record<string, number> }[];
  verification: { ok: boolean; settledSeenByClients: number; settledInDatabase: number; reconcileClean: boolean; problems: string[] };
}

function runBench(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/bench/run.ts', ...args], { cwd: repositoryRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('npm run bench -- --smoke', () => {
  test(
    'runs every workload and the ceiling, and verifies the node against the database',
    async () => {
      const env: NodeJS.ProcessEnv = {};
      for (const [key, value] of Object.entries(process.env)) {
        if (key.startsWith('VITEST') || key === 'NODE_OPTIONS' || key.startsWith('CLEARING_')) continue;
        env[key] = value;
      }
      env['DATABASE_URL'] = databaseAdminUrl();
      const { code, stdout, stderr } = await runBench(['--smoke', '--duration', '1', '--json'], env);
      expect(code, `bench exited with ${code}; its stderr:\n${stderr}`).toBe(0);
      const report = JSON.parse(stdout) as SmokeReport;
      expect(report.verification.ok, report.verification.problems.join('\n')).toBe(true);
      expect(report.verification.reconcileClean).toBe(true);
      expect(report.verification.settledSeenByClients).toBe(report.verification.settledInDatabase);
      expect(report.results.map((r) => `${r.workload} ${r.target}`)).toEqual([
        'unary ceiling',
        'unary node',
        'batch ceiling',
        'batch node',
        'open node',
        'two-phase node',
        'fanout node',
      ]);
      for (const r of report.results) expect(r.callsPerSecond, `${r.workload} ${r.target} made no calls`).toBeGreaterThan(0);
    },
    smokeTimeoutMs,
  );
});
