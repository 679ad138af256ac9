// The newcomer's path, end to end: `npm start` with no DATABASE_URL starts an
// embedded Postgres in a fresh data directory, seeds the demo banks, prints a
// ready-to-paste grpcurl call, settles the demo payment, stops cleanly on
// SIGTERM, and comes back on the same data directory with its money intact
// and without seeding twice. The node runs as a real child process, exactly
// as `npm start` runs it (node --import tsx src/main.ts), and is called over a socket with
// the generated clients.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TransferStatus } from '../src/gen/clearing/v1/transfer.js';
import { clearingClient, operatorClient } from './support/clients.js';
import { transfer } from './support/fixtures.js';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));

/** initdb on a fresh directory plus migrations take seconds; a cold machine more. */
const servingTimeoutMs = 60_000;
/** Graceful shutdown: stop gRPC, drain the settlement queue, fast-stop Postgres. */
const exitTimeoutMs = 20_000;
/** Kept from the child's output to explain a failure. */
const outputCharactersMax = 20_000;

const demoBics = ['ALPHDEFFXXX', 'BRAVFRPPXXX', 'CHRLITMMXXX', 'XBGWUS33XXX'];
const demoFundingMinor = 100_000_000n;
const demoPaymentMinor = 1234n;

interface StartedNode {
  child: ChildProcess;
  address: string;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or 128 + signal number) once the process has exited. */
  exited: Promise<number>;
}

/**
 * The environment a newcomer has: nothing of ours. DATABASE_URL and every
 * CLEARING_* variable of the test run are removed so that the child uses its
 * embedded Postgres in `dataDir` and nothing else.
 */
function newcomerEnvironment(dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'DATABASE_URL' || key.startsWith('CLEARING_')) continue;
    env[key] = value;
  }
  return {
    ...env,
    CLEARING_DATA_DIR: dataDir,
    CLEARING_GRPC_ADDRESS: '127.0.0.1:0',
    CLEARING_METRICS_ADDRESS: '127.0.0.1:0',
    CLEARING_LOG_LEVEL: 'info',
  };
}

function appendBounded(buffer: string, chunk: string): string {
  const joined = buffer + chunk;
  return joined.length > outputCharactersMax ? joined.slice(joined.length - outputCharactersMax) : joined;
}

/** Starts `node --import tsx src/main.ts` and waits for its 'clearing node serving' log line. */
async function startChild(dataDir: string): Promise<StartedNode> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: repositoryRoot,
    env: newcomerEnvironment(dataDir),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  let pendingLine = '';
  let onServing: ((address: string) => void) | undefined;

  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = appendBounded(stderr, chunk);
  });
  child.stdout?.on('data', (chunk: string) => {
    stdout = appendBounded(stdout, chunk);
    const lines = (pendingLine + chunk).split('\n');
    pendingLine = lines.pop() ?? '';
    for (const line of lines) {
      // pino writes one JSON object per line; anything else is not ours to parse.
      let entry: { msg?: unknown; address?: unknown };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      if (entry.msg === 'clearing node serving' && typeof entry.address === 'string') onServing?.(entry.address);
    }
  });

  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve(code ?? 128 + (signal === null ? 0 : os.constants.signals[signal]));
    });
  });

  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no 'clearing node serving' line within ${servingTimeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`)),
      servingTimeoutMs,
    );
    onServing = (found) => {
      clearTimeout(timer);
      resolve(found);
    };
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the node exited with code ${code} before serving\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    });
  });
  return { child, address, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Sends SIGTERM and resolves with the exit code; rejects if the node takes longer than `exitTimeoutMs`. */
async function terminate(node: StartedNode): Promise<number> {
  node.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the node did not exit within ${exitTimeoutMs} ms of SIGTERM\nstdout:\n${node.stdout()}\nstderr:\n${node.stderr()}`)),
      exitTimeoutMs,
    );
  });
  try {
    return await Promise.race([node.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** PIDs of processes whose command line names `directory` (the postmaster runs with `-D <dataDir>/postgres`). */
function processesNaming(directory: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let commandLine: string;
    try {
      commandLine = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue; // Exited while we looked.
    }
    if (commandLine.split('\0').some((arg) => arg.includes(directory))) pids.push(Number(entry));
  }
  return pids;
}

async function eventually(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const running = new Set<ChildProcess>();
let dataDir: string;
let first: StartedNode | undefined;
let second: StartedNode | undefined;

beforeAll(() => {
  // Under os.tmpdir() (world-searchable): as root, the embedded Postgres runs as
  // the 'postgres' user, which must pass through every directory above its own.
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'clearing-start-'));
  chmodSync(dataDir, 0o711);
});

afterAll(async () => {
  for (const child of running) {
    child.kill('SIGTERM');
    const gone = await eventually(() => child.exitCode !== null || child.signalCode !== null, exitTimeoutMs);
    if (!gone) child.kill('SIGKILL');
  }
  // A Postgres the node failed to stop would keep the directory busy; stop only that one.
  if (dataDir !== undefined) {
    for (const pid of processesNaming(dataDir)) {
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {
        // Already gone.
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}, 2 * exitTimeoutMs + 5_000);

describe('npm start on a fresh data directory', () => {
  test('comes up on an embedded Postgres and prints a ready-to-paste grpcurl call', async () => {
    first = await startChild(dataDir);
    expect(first.address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(first.address).not.toBe('127.0.0.1:0');
    // main.ts writes the example after the serving line, on stderr.
    const shown = await eventually(() => first?.stderr().includes('Try:') === true, 5_000);
    expect(shown, `stderr:\n${first.stderr()}`).toBe(true);
    expect(first.stderr()).toContain(`grpcurl -plaintext -H 'x-principal: participant/ALPHDEFFXXX'`);
    expect(first.stderr()).toContain(`${first.address} clearing.v1.ClearingService/SubmitTransfer`);
  }, servingTimeoutMs + 10_000);

  test('the operator sees the four demo participants', async () => {
    const operator = operatorClient(first!.address, 'operator/newcomer');
    try {
      const page = await operator.listParticipants({ pageSize: 0, pageToken: '' });
      expect(page.participants.map((p) => p.bic)).toEqual(demoBics);
      expect(page.nextPageToken).toBe('');
    } finally {
      operator.raw.close();
    }
  });

  test('the demo payment settles', async () => {
    const alpha = clearingClient(first!.address, 'participant/ALPHDEFFXXX');
    try {
      const response = await alpha.submitTransfer({ transfer: transfer('ALPHDEFFXXX', 'BRAVFRPPXXX', demoPaymentMinor), waitForFinal: false });
      expect(response.result?.status).toBe(TransferStatus.TRANSFER_STATUS_SETTLED);
      expect(response.result?.reasonCode).toBe('');
      expect(response.result?.replayed).toBe(false);
    } finally {
      alpha.raw.close();
    }
  });

  test('SIGTERM stops the node with exit code 0 and stops its Postgres', async () => {
    const code = await terminate(first!);
    expect(code, `stdout:\n${first!.stdout()}\nstderr:\n${first!.stderr()}`).toBe(0);
    expect(first!.stdout()).toContain('"msg":"node stopped"');
    // The node awaits Postgres's exit before exiting itself; allow the kernel a moment to reap.
    const noPostgres = await eventually(() => processesNaming(dataDir).length === 0, 2_000);
    expect(noPostgres, `still running for ${dataDir}: ${processesNaming(dataDir).join(', ')}`).toBe(true);
  }, exitTimeoutMs + 5_000);
});

describe('npm start again on the same data directory', () => {
  test('comes up on the kept data and does not seed again', async () => {
    second = await startChild(dataDir);
    // Give main.ts the moment it would need to print the example, then check it did not.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(second.stderr()).not.toContain('Try:');
    expect(second.stdout()).not.toContain('seeded demo participants');

    const operator = operatorClient(second.address, 'operator/newcomer');
    const alpha = clearingClient(second.address, 'participant/ALPHDEFFXXX');
    try {
      const page = await operator.listParticipants({ pageSize: 0, pageToken: '' });
      expect(page.participants.map((p) => p.bic)).toEqual(demoBics);

      const { positions } = await alpha.getPosition({ currency: 'EUR' });
      expect(positions).toHaveLength(1);
      expect(positions[0]).toMatchObject({
        bic: 'ALPHDEFFXXX',
        currency: 'EUR',
        balanceMinor: demoFundingMinor - demoPaymentMinor,
        reservedMinor: 0n,
        availableMinor: demoFundingMinor - demoPaymentMinor,
      });
    } finally {
      operator.raw.close();
      alpha.raw.close();
    }
  }, servingTimeoutMs + 10_000);

  test('SIGTERM stops it again with exit code 0', async () => {
    const code = await terminate(second!);
    expect(code, `stdout:\n${second!.stdout()}\nstderr:\n${second!.stderr()}`).toBe(0);
    const noPostgres = await eventually(() => processesNaming(dataDir).length === 0, 2_000);
    expect(noPostgres, `still running for ${dataDir}: ${processesNaming(dataDir).join(', ')}`).toBe(true);
  }, exitTimeoutMs + 5_000);
});
