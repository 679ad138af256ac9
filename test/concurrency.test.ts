// Two clearing node processes on one database, hammered at once on the same
// three hot banks. Each node's settlement loop locks the positions its batch
// touches in sorted order, so batches of the two nodes serialize on the row
// locks and never deadlock (DESIGN.md, group commit). Amounts are chosen so
// that overdraw attempts are frequent: two transfers that each fit but
// together overdraw must be decided one after the other, even when they
// arrive at different nodes.
//
// What must hold, whatever the interleaving:
// - every call is answered with a result (SETTLED, or REJECTED AM04), never an
//   error: a deadlock, serialization failure or lost race is the node's to
//   retry, not the client's;
// - no position is ever below zero, at any instant, and the sum of balances is
//   the liquidity funded (conservation);
// - each bank's balance is exactly what the answers the clients saw say;
// - what the clients saw SETTLED is what the database holds SETTLED.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ServiceError } from '@grpc/grpc-js';
import { TransferStatus, type CreditTransfer, type TransferResult } from '../src/gen/clearing/v1/transfer.js';
import { clearingClient, operatorClient, type ClearingClient, type OperatorClient } from './support/clients.js';
import { createBareDatabase, openTestPool } from './support/database.js';
import { participant, transfer, uniqueId } from './support/fixtures.js';
import { startNodeProcess, stopAllNodeProcesses, type NodeProcess } from './support/process.js';

const bics = ['HOTAATAAXXX', 'HOTBBEBBXXX', 'HOTCCHCCXXX'] as const;
type Bic = (typeof bics)[number];
const fundedMinor = 10_000n;

/** Concurrent client loops per node; each sends one call at a time. */
const loopsPerNode = 16;
/** Calls each loop makes; about a fifth are SubmitTransfers batches. */
const callsPerLoop = 45;
const batchCallShare = 0.2;
const batchTransfersMax = 4;
/** Amounts from 1 to this: about a third of a bank's starting position, so overdraws are frequent. */
const amountMaxMinor = 3_000;
/** A call not answered within this is a hang; the client would give up. */
const callDeadlineMs = 20_000;
/** The load must finish well within the test's budget. */
const loadTimeoutMs = 30_000;
/** How often the monitor reads all three positions while the load runs. */
const monitorIntervalMs = 25;

// A seeded generator, so a failing interleaving's inputs can be replayed: CONCURRENCY_SEED=<n>.
const seed = Number(process.env.CONCURRENCY_SEED ?? Date.now() % 2_147_483_647);
function generator(start: number): () => number {
  let state = start >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface Seen {
  node: string;
  request: CreditTransfer;
  result: TransferResult;
}

interface CallFailure {
  node: string;
  method: string;
  code: number | undefined;
  message: string;
}

let database: Awaited<ReturnType<typeof createBareDatabase>>;
let nodeA: NodeProcess;
let nodeB: NodeProcess;
let sql: pg.Pool;
const grpcClients: { close(): void }[] = [];

function operatorOf(node: NodeProcess): OperatorClient {
  const client = operatorClient(node.address);
  grpcClients.push(client.raw);
  return client;
}

function participantOf(node: NodeProcess, bic: Bic): ClearingClient {
  const client = clearingClient(node.address, `participant/${bic}`);
  grpcClients.push(client.raw);
  return client;
}

beforeAll(async () => {
  database = await createBareDatabase();
  sql = openTestPool(database.url, 3);
  // Both start together: migrations are advisory-locked, so one applies them and the other waits.
  // Every batch of transfers either node knows the rows of is decided ahead of
  // its locks, even right after a refusal (no cooldown), so each node's
  // expectation is regularly made wrong by the other and must be refused
  // (settlement_expect) and decided again under the locks. Debug logs say
  // which way each batch went.
  const env = { CLEARING_DECIDE_AHEAD_OPERATIONS_MIN: '1', CLEARING_DECIDE_AHEAD_COOLDOWN_MS: '0', CLEARING_LOG_LEVEL: 'debug' };
  [nodeA, nodeB] = await Promise.all([
    startNodeProcess({ databaseUrl: database.url, name: 'node-a', logLinesMax: 5_000, env }),
    startNodeProcess({ databaseUrl: database.url, name: 'node-b', logLinesMax: 5_000, env }),
  ]);
});

afterAll(async () => {
  for (const client of grpcClients) client.close();
  await Promise.allSettled([nodeA?.stop(), nodeB?.stop()]);
  await stopAllNodeProcesses();
  await sql?.end();
  await database?.drop();
}, 60_000);

describe('two node processes on one database, three hot banks', () => {
  test('every call is answered, positions never go negative, money is conserved and matches the answers', async () => {
    // Set-up through both nodes: either node serves the operator.
    const operatorA = operatorOf(nodeA);
    const operatorB = operatorOf(nodeB);
    for (const [i, bic] of bics.entries()) {
      const operator = i % 2 === 0 ? operatorA : operatorB;
      await operator.createParticipant({ participant: participant(bic) });
      await operator.fundPosition({ requestId: uniqueId('fund'), bic, amount: { currency: 'EUR', amountMinor: fundedMinor } });
      // Strictly prefunded: available = balance − reserved.
      await operator.setDebitCap({ requestId: uniqueId('cap'), bic, debitCap: { currency: 'EUR', amountMinor: 0n } });
    }
    const fundedTotalMinor = fundedMinor * BigInt(bics.length);

    // While the load runs, read the three positions in one statement (one
    // snapshot) again and again: no instant may show a negative position or
    // money created or lost.
    const monitorViolations: string[] = [];
    let monitorReads = 0;
    let loadDone = false;
    const monitor = (async () => {
      while (!loadDone) {
        const { rows } = await sql.query<{ bic: string; balance: string; available: string }>(
          `SELECT bic, balance_minor::text AS balance, (balance_minor + debit_cap_minor - reserved_minor)::text AS available
             FROM positions WHERE currency = 'EUR' ORDER BY bic`,
        );
        monitorReads += 1;
        let sum = 0n;
        for (const row of rows) {
          sum += BigInt(row.balance);
          if (BigInt(row.available) < 0n) monitorViolations.push(`${row.bic} available ${row.available}`);
        }
        if (sum !== fundedTotalMinor) monitorViolations.push(`sum of balances ${sum} ≠ funded ${fundedTotalMinor}`);
        await new Promise((resolve) => setTimeout(resolve, monitorIntervalMs));
      }
    })();

    const seen: Seen[] = [];
    const failures: CallFailure[] = [];
    /** A transfer from `debtor` to one of the two other banks, of 1 to amountMaxMinor. */
    const randomTransfer = (random: () => number, debtor: Bic): CreditTransfer => {
      const others = bics.filter((b) => b !== debtor);
      return transfer(debtor, others[Math.floor(random() * others.length)] as Bic, BigInt(1 + Math.floor(random() * amountMaxMinor)));
    };

    async function clientLoop(node: NodeProcess, clients: Record<Bic, ClearingClient>, random: () => number): Promise<void> {
      for (let call = 0; call < callsPerLoop; call++) {
        const debtor = bics[Math.floor(random() * bics.length)] as Bic;
        const batch = random() < batchCallShare;
        // A SubmitTransfers call carries one debtor agent's transfers: the caller's own.
        const count = batch ? 2 + Math.floor(random() * (batchTransfersMax - 1)) : 1;
        const requests = Array.from({ length: count }, () => randomTransfer(random, debtor));
        const first = requests[0] as CreditTransfer;
        const deadline = new Date(Date.now() + callDeadlineMs);
        try {
          const results = batch
            ? (await clients[debtor].submitTransfers({ transfers: requests, waitForFinal: false }, { deadline })).results
            : [(await clients[debtor].submitTransfer({ transfer: first, waitForFinal: false }, { deadline })).result as TransferResult];
          requests.forEach((request, i) => seen.push({ node: node.name, request, result: results[i] as TransferResult }));
        } catch (error) {
          const e = error as ServiceError;
          failures.push({ node: node.name, method: batch ? 'SubmitTransfers' : 'SubmitTransfer', code: e.code, message: e.details ?? e.message });
        }
      }
    }

    const loops: Promise<void>[] = [];
    for (const node of [nodeA, nodeB]) {
      const clients = Object.fromEntries(bics.map((bic) => [bic, participantOf(node, bic)])) as Record<Bic, ClearingClient>;
      for (let i = 0; i < loopsPerNode; i++) loops.push(clientLoop(node, clients, generator(seed + 7919 * (loops.length + 1))));
    }
    const startedMs = performance.now();
    let loadTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(loops),
      new Promise((_, reject) => (loadTimer = setTimeout(() => reject(new Error(`the load did not finish within ${loadTimeoutMs} ms (seed ${seed})`)), loadTimeoutMs))),
    ]);
    clearTimeout(loadTimer);
    const loadMs = performance.now() - startedMs;
    loadDone = true;
    await monitor;

    // 1. Every call answered, every answer a result: SETTLED, or REJECTED for insufficient funds.
    expect(failures, `seed ${seed}`).toEqual([]);
    const outcomes = new Map<string, number>();
    for (const { result } of seen) {
      const key = `${TransferStatus[result.status]} ${result.reasonCode}`.trim();
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      expect(result.replayed).toBe(false);
    }
    expect([...outcomes.keys()].sort(), `seed ${seed}`).toEqual(['TRANSFER_STATUS_REJECTED AM04', 'TRANSFER_STATUS_SETTLED']);
    const settled = seen.filter((s) => s.result.status === TransferStatus.TRANSFER_STATUS_SETTLED);

    // 2. Never negative (at any instant the monitor looked, and at the end), and conserved.
    expect(monitorViolations, `seed ${seed}`).toEqual([]);
    const positions = (await operatorB.listPositions({ bic: '', currency: 'EUR', pageSize: 0, pageToken: '' })).positions;
    expect(positions.map((p) => p.bic).sort()).toEqual([...bics].sort());
    for (const p of positions) {
      expect(p.availableMinor, p.bic).toBeGreaterThanOrEqual(0n);
      expect(p.reservedMinor, p.bic).toBe(0n);
    }
    expect(positions.reduce((sum, p) => sum + p.balanceMinor, 0n)).toBe(fundedTotalMinor);

    // 3. Each bank's balance is what the answers say: funded + received − sent, settled only.
    const expected = new Map<string, bigint>(bics.map((bic) => [bic, fundedMinor]));
    for (const { request } of settled) {
      const amount = request.amount?.amountMinor ?? 0n;
      expected.set(request.debtorAgent, (expected.get(request.debtorAgent) ?? 0n) - amount);
      expected.set(request.creditorAgent, (expected.get(request.creditorAgent) ?? 0n) + amount);
    }
    expect(Object.fromEntries(positions.map((p) => [p.bic, p.balanceMinor]))).toEqual(Object.fromEntries(expected));

    // 4. The books close.
    const reconciliation = await operatorA.reconcile({});
    expect(reconciliation.violations).toEqual([]);
    expect(reconciliation.clean).toBe(true);

    // 5. What the clients saw SETTLED is what the database holds SETTLED, transfer by transfer.
    const stored = await sql.query<{ instruction_id: string; status: string; node_id: string }>(
      `SELECT t.instruction_id, t.status, b.node_id FROM transfers t JOIN settlement_batches b ON b.id = t.batch_id`,
    );
    expect(stored.rows).toHaveLength(seen.length);
    const storedSettled = new Set(stored.rows.filter((r) => r.status === 'SETTLED').map((r) => r.instruction_id));
    expect(storedSettled.size).toBe(settled.length);
    for (const { request } of settled) expect(storedSettled.has(request.instructionId), request.instructionId).toBe(true);
    // The operator's paged list agrees with the table.
    let listedSettled = 0;
    let pageToken = '';
    for (let page = 0; page < 100; page++) {
      const listed = await operatorA.listTransfers({ bic: '', status: TransferStatus.TRANSFER_STATUS_SETTLED, pageSize: 250, pageToken });
      listedSettled += listed.transfers.length;
      pageToken = listed.nextPageToken;
      if (pageToken === '') break;
    }
    expect(pageToken).toBe('');
    expect(listedSettled).toBe(settled.length);

    // 6. Both nodes really settled: each answered SETTLED results, and each committed batches.
    const settledBy = (name: string) => settled.filter((s) => s.node === name).length;
    expect(settledBy(nodeA.name)).toBeGreaterThan(0);
    expect(settledBy(nodeB.name)).toBeGreaterThan(0);
    const batches = await sql.query<{ node_id: string; batches: string; operations: string }>(
      `SELECT node_id, count(*)::text AS batches, sum(operations)::text AS operations FROM settlement_batches GROUP BY node_id ORDER BY node_id`,
    );
    expect(batches.rows.map((r) => r.node_id)).toEqual([nodeA.name, nodeB.name]);

    // A batch that had to be retried is fine (the node absorbs it); one that failed is not.
    const logged = (node: NodeProcess, msg: string) => node.logEntries().filter((e) => e.msg === msg).length;
    for (const node of [nodeA, nodeB]) expect(logged(node, 'settlement batch failed; nothing applied'), node.name).toBe(0);
    // Both ways of deciding ran while the other node wrote: batches decided ahead, and refusals.
    const decidedAhead = (node: NodeProcess) =>
      node.logEntries().filter((e) => e.msg === 'settlement batch committed' && e.path === 'expected').length;
    const refused = (node: NodeProcess) => logged(node, 'settlement batch decided ahead did not hold; deciding under the locks');
    expect(decidedAhead(nodeA) + decidedAhead(nodeB), `seed ${seed}`).toBeGreaterThan(0);

    const transfersPerSecond = Math.round((seen.length / loadMs) * 1000);
    console.log(
      `[concurrency] seed ${seed}: ${seen.length} transfers in ${Math.round(loadMs)} ms (${transfersPerSecond}/s) over ${loops.length} loops; ` +
        `settled ${settled.length} (node-a ${settledBy(nodeA.name)}, node-b ${settledBy(nodeB.name)}), rejected AM04 ${seen.length - settled.length}; ` +
        `batches ${batches.rows.map((r) => `${r.node_id} ${r.batches} (${r.operations} ops)`).join(', ')}; ` +
        `conflict retries node-a ${logged(nodeA, 'settlement batch conflicted; retrying')}, node-b ${logged(nodeB, 'settlement batch conflicted; retrying')}; ` +
        `decided ahead node-a ${decidedAhead(nodeA)} (refused ${refused(nodeA)}), node-b ${decidedAhead(nodeB)} (refused ${refused(nodeB)}); ` +
        `monitor reads ${monitorReads}; balances ${positions.map((p) => `${p.bic}=${p.balanceMinor}`).join(' ')}`,
    );
  }, 60_000);
});
