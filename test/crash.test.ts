// kill -9 under load. A node process settles transfers from several client
// loops and is killed with SIGKILL in the middle of it: no graceful shutdown,
// no drained queue, a settlement transaction possibly half-written or
// committed but not yet answered. The promises of DESIGN.md must survive it:
// - "reply only after COMMIT": whatever a client saw SETTLED (or REJECTED) is
//   in the database, once, with that status;
// - the books still close, and a second node on the same database serves on;
// - an instruction sent again with the same instruction id is answered, and if
//   the dead node had committed it, the answer is the stored one (replayed),
//   never a second settlement.
//
// Half the client loops reach node A through a small TCP proxy that delays
// A's answers by a few milliseconds, as a wide-area link would. Shortly before
// the kill the proxy stops passing answers on (a link failing in one direction
// first), and at the kill it drops what it holds. So some instructions are
// committed by A but never answered: without the proxy a kill almost never
// lands between COMMIT and the answer leaving the node, and their replay would
// go untested. The other half of the loops talk to A directly and keep it busy
// up to the kill, so other instructions are cut off before or during their
// settlement transaction and must be decided afresh by the next node.
import net from 'node:net';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ServiceError } from '@grpc/grpc-js';
import { TransferStatus, type CreditTransfer, type TransferResult } from '../src/gen/clearing/v1/transfer.js';
import { clearingClient, operatorClient, type ClearingClient } from './support/clients.js';
import { createBareDatabase, openTestPool } from './support/database.js';
import { participant, transfer, uniqueId } from './support/fixtures.js';
import { startNodeProcess, stopAllNodeProcesses, type NodeProcess } from './support/process.js';

const bics = ['CRSAATAAXXX', 'CRSBBEBBXXX', 'CRSCCHCCXXX'] as const;
type Bic = (typeof bics)[number];
const fundedMinor = 30_000n;
/** Amounts from 1 to this: most transfers settle, some overdraw. */
const amountMaxMinor = 3_000;

const clientLoops = 16;
const batchCallShare = 0.25;
const batchTransfersMax = 5;
/** How long the load runs against node A before it is killed. */
const loadBeforeKillMs = 1_500;
/** Generous: the retries may wait on a row lock until Postgres has ended the dead node's backends. */
const callDeadlineMs = 20_000;
/** Postgres notices a dead client's closed socket on its next read; this bounds the wait for it. */
const deadBackendsGoneTimeoutMs = 20_000;
/** How long the proxies hold each chunk of node A's answers before passing it on. */
const answerDelayMs = 25;
/** How long before the kill one proxy stops passing answers on: what A commits meanwhile goes unanswered. */
const answersHeldBeforeKillMs = 200;
/** Bounds the extra wait for at least one such committed but unanswered instruction. */
const committedUnansweredWaitMs = 5_000;

interface Call {
  requests: CreditTransfer[];
  batch: boolean;
  /** Sent through the proxy whose answers stop shortly before the kill. */
  viaHeldLink: boolean;
  results?: TransferResult[];
  error?: { code: number | undefined; message: string; atMs: number };
}

interface StoredTransfer {
  debtor_agent: string;
  instruction_id: string;
  uetr: string;
  creditor_agent: string;
  amount_minor: string;
  status: string;
  reason_code: string;
}

const key = (debtorAgent: string, instructionId: string) => `${debtorAgent}/${instructionId}`;
const statusName = (status: TransferStatus) => TransferStatus[status].replace('TRANSFER_STATUS_', '');

let database: Awaited<ReturnType<typeof createBareDatabase>>;
let sql: pg.Pool;
let nodeA: NodeProcess | undefined;
let nodeB: NodeProcess | undefined;
const grpcClients: { close(): void }[] = [];
const links: Link[] = [];

beforeAll(async () => {
  database = await createBareDatabase();
  sql = openTestPool(database.url, 2);
});

afterAll(async () => {
  for (const client of grpcClients) client.close();
  await Promise.allSettled(links.map((link) => link.close()));
  await Promise.allSettled([nodeA?.stop(), nodeB?.stop()]);
  await stopAllNodeProcesses();
  await sql?.end();
  await database?.drop();
}, 60_000);

async function storedTransfers(): Promise<StoredTransfer[]> {
  const { rows } = await sql.query<StoredTransfer>(
    `SELECT debtor_agent, instruction_id, uetr::text AS uetr, creditor_agent, amount_minor::text AS amount_minor, status, reason_code
       FROM transfers`,
  );
  return rows;
}

async function balances(): Promise<Record<string, bigint>> {
  const { rows } = await sql.query<{ bic: string; balance: string }>(`SELECT bic, balance_minor::text AS balance FROM positions WHERE currency = 'EUR'`);
  return Object.fromEntries(rows.map((r) => [r.bic, BigInt(r.balance)]));
}

/** Waits until Postgres has ended every backend of a clearing node on this database. */
async function deadBackendsGone(): Promise<number> {
  const startedMs = Date.now();
  for (;;) {
    const { rows } = await sql.query<{ backends: string }>(
      `SELECT count(*)::text AS backends FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'clearing-node%'`,
    );
    if (rows[0]?.backends === '0') return Date.now() - startedMs;
    if (Date.now() - startedMs > deadBackendsGoneTimeoutMs) {
      throw new Error(`clearing-node backends still open ${deadBackendsGoneTimeoutMs} ms after the kill: ${rows[0]?.backends}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

interface Link {
  address: string;
  /** From now on, answers are kept back instead of passed on. */
  holdAnswers(): void;
  /** Drops every connection at once; answers still kept back are lost. */
  cut(): void;
  close(): Promise<void>;
}

/** A TCP proxy to `target` that forwards requests at once and answers after `delayMs`, in order. */
async function delayingLink(target: string, delayMs: number): Promise<Link> {
  const index = target.lastIndexOf(':');
  const sockets = new Set<net.Socket>();
  let holding = false;
  const server = net.createServer((downstream) => {
    const upstream = net.connect(Number(target.slice(index + 1)), target.slice(0, index));
    sockets.add(downstream).add(upstream);
    downstream.pipe(upstream);
    // Timers of one duration fire in the order they were set: the byte stream keeps its order.
    upstream.on('data', (chunk) =>
      setTimeout(() => {
        if (!holding && !downstream.destroyed) downstream.write(chunk);
      }, delayMs),
    );
    upstream.on('end', () => setTimeout(() => holding || downstream.end(), delayMs));
    for (const socket of [downstream, upstream]) {
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        downstream.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const cut = () => {
    for (const socket of sockets) socket.destroy();
  };
  return {
    address: `127.0.0.1:${port}`,
    holdAnswers: () => {
      holding = true;
    },
    cut,
    close: () => {
      cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

async function send(client: ClearingClient, call: Call): Promise<TransferResult[]> {
  const deadline = new Date(Date.now() + callDeadlineMs);
  if (call.batch) return (await client.submitTransfers({ transfers: call.requests, waitForFinal: false }, { deadline })).results;
  return [(await client.submitTransfer({ transfer: call.requests[0] as CreditTransfer, waitForFinal: false }, { deadline })).result as TransferResult];
}

function clientsOf(address: string): Record<Bic, ClearingClient> {
  return Object.fromEntries(
    bics.map((bic) => {
      const client = clearingClient(address, `participant/${bic}`);
      grpcClients.push(client.raw);
      return [bic, client];
    }),
  ) as Record<Bic, ClearingClient>;
}

describe('a node killed with SIGKILL under load', () => {
  test('loses nothing it answered, applies nothing twice, and another node serves on', async () => {
    const a = await startNodeProcess({ databaseUrl: database.url, name: 'node-a' });
    nodeA = a;
    const operatorA = operatorClient(a.address);
    grpcClients.push(operatorA.raw);
    for (const bic of bics) {
      await operatorA.createParticipant({ participant: participant(bic) });
      await operatorA.fundPosition({ requestId: uniqueId('fund'), bic, amount: { currency: 'EUR', amountMinor: fundedMinor } });
    }
    const fundedTotalMinor = fundedMinor * BigInt(bics.length);

    // --- load, then kill -9 ---------------------------------------------------
    const calls: Call[] = [];
    // Half the loops reach A through the proxy, whose answers stop shortly before
    // the kill; the other half directly, keeping A busy up to the kill.
    const heldLink = await delayingLink(a.address, answerDelayMs);
    links.push(heldLink);
    const clientsHeld = clientsOf(heldLink.address);
    const clientsLive = clientsOf(a.address);
    let sending = true;
    const loop = async (viaHeldLink: boolean) => {
      const clientsA = viaHeldLink ? clientsHeld : clientsLive;
      while (sending) {
        const debtor = bics[Math.floor(Math.random() * bics.length)] as Bic;
        const others = bics.filter((b) => b !== debtor);
        const batch = Math.random() < batchCallShare;
        const count = batch ? 2 + Math.floor(Math.random() * (batchTransfersMax - 1)) : 1;
        const call: Call = {
          batch,
          viaHeldLink,
          requests: Array.from({ length: count }, () =>
            transfer(debtor, others[Math.floor(Math.random() * others.length)] as Bic, BigInt(1 + Math.floor(Math.random() * amountMaxMinor))),
          ),
        };
        // Remembered before it is sent: a call the node never answers must be retried.
        calls.push(call);
        try {
          call.results = await send(clientsA[debtor], call);
        } catch (error) {
          const e = error as ServiceError;
          call.error = { code: e.code, message: e.details ?? e.message, atMs: performance.now() };
        }
      }
    };
    const loadStartedMs = performance.now();
    const loops = Array.from({ length: clientLoops }, (_, i) => loop(i % 2 === 0));
    await new Promise((resolve) => setTimeout(resolve, loadBeforeKillMs - answersHeldBeforeKillMs));
    heldLink.holdAnswers();
    await new Promise((resolve) => setTimeout(resolve, answersHeldBeforeKillMs));
    // On a busy machine A may not have settled anything the proxy now holds back;
    // give it a moment more, so that the kill really strands a committed instruction.
    for (const waitUntilMs = Date.now() + committedUnansweredWaitMs; Date.now() < waitUntilMs; ) {
      const stranded = calls.filter((c) => c.viaHeldLink && c.results === undefined && c.error === undefined).flatMap((c) => c.requests);
      const { rows } = await sql.query<{ committed: string }>(
        `SELECT count(*)::text AS committed FROM transfers WHERE (debtor_agent, instruction_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
        [stranded.map((r) => r.debtorAgent), stranded.map((r) => r.instructionId)],
      );
      if (rows[0]?.committed !== '0') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    sending = false;
    const killedAtMs = performance.now();
    a.kill('SIGKILL');
    heldLink.cut();
    const exit = await a.exited;
    await Promise.all(loops);
    expect(exit.signal).toBe('SIGKILL');
    const backendsGoneMs = await deadBackendsGone();

    // Before the kill, every call was answered with a result.
    const early = calls.filter((c) => c.error !== undefined && c.error.atMs < killedAtMs);
    expect(early.map((c) => c.error)).toEqual([]);
    const answered = calls.filter((c) => c.results !== undefined);
    const unanswered = calls.filter((c) => c.results === undefined);
    expect(answered.length).toBeGreaterThan(0);

    // --- what the database kept ------------------------------------------------
    const afterKill = await storedTransfers();
    // Each settlement transaction draws its batch id first: a drawn id without a
    // batch row is a transaction the kill cut short (and Postgres rolled back).
    const { rows: sequence } = await sql.query<{ drawn: string; committed: string }>(
      `SELECT (SELECT last_value FROM settlement_batch_id_seq)::text AS drawn, (SELECT max(id) FROM settlement_batches)::text AS committed`,
    );
    const batchesCutShort = Number(sequence[0]?.drawn) - Number(sequence[0]?.committed);
    const storedByKey = new Map(afterKill.map((t) => [key(t.debtor_agent, t.instruction_id), t]));
    const rowsPerUetr = new Map<string, number>();
    for (const t of afterKill) rowsPerUetr.set(t.uetr, (rowsPerUetr.get(t.uetr) ?? 0) + 1);
    const sentKeys = new Set(calls.flatMap((c) => c.requests.map((r) => key(r.debtorAgent, r.instructionId))));
    // Nothing stored that no client sent.
    expect(afterKill.filter((t) => !sentKeys.has(key(t.debtor_agent, t.instruction_id)))).toEqual([]);

    // Every answer a client got is in the database exactly once, with that outcome.
    let answeredSettled = 0;
    for (const call of answered) {
      call.requests.forEach((request, i) => {
        const result = call.results?.[i] as TransferResult;
        const stored = storedByKey.get(key(request.debtorAgent, request.instructionId));
        expect(stored, `answered ${statusName(result.status)} but not stored: ${request.instructionId}`).toBeDefined();
        expect(rowsPerUetr.get(request.uetr), request.uetr).toBe(1);
        expect(stored && { status: stored.status, reasonCode: stored.reason_code, uetr: stored.uetr, creditor: stored.creditor_agent, amount: stored.amount_minor }).toEqual({
          status: statusName(result.status),
          reasonCode: result.reasonCode,
          uetr: request.uetr,
          creditor: request.creditorAgent,
          amount: String(request.amount?.amountMinor),
        });
        if (result.status === TransferStatus.TRANSFER_STATUS_SETTLED) answeredSettled += 1;
      });
    }
    expect(answeredSettled).toBeGreaterThan(0);
    // The creditors accept automatically: a transfer is stored final or not at all, never left RESERVED.
    expect(afterKill.filter((t) => t.status !== 'SETTLED' && t.status !== 'REJECTED')).toEqual([]);

    // --- node B on the same database ---------------------------------------------
    const b = await startNodeProcess({ databaseUrl: database.url, name: 'node-b' });
    nodeB = b;
    const operatorB = operatorClient(b.address);
    grpcClients.push(operatorB.raw);
    const first = await operatorB.reconcile({});
    expect(first.violations).toEqual([]);
    expect(first.clean).toBe(true);

    // Every unanswered call again, same content, same instruction ids: each item is
    // answered; what A had committed comes back as A's stored result, replayed.
    const clientsB = clientsOf(b.address);
    const committedBeforeKill = new Set<string>();
    const retryFailures: string[] = [];
    await Promise.all(
      unanswered.map(async (call) => {
        try {
          call.results = await send(clientsB[call.requests[0]?.debtorAgent as Bic], call);
        } catch (error) {
          const e = error as ServiceError;
          retryFailures.push(`${call.requests.map((r) => r.instructionId).join(',')}: ${e.code} ${e.details ?? e.message}`);
        }
      }),
    );
    expect(retryFailures).toEqual([]);
    let decidedByB = 0;
    for (const call of unanswered) {
      call.requests.forEach((request, i) => {
        const result = call.results?.[i] as TransferResult;
        const before = storedByKey.get(key(request.debtorAgent, request.instructionId));
        expect(result.instructionId).toBe(request.instructionId);
        expect(result.replayed, `${request.instructionId} stored before the retry: ${before !== undefined}`).toBe(before !== undefined);
        if (before !== undefined) {
          committedBeforeKill.add(request.instructionId);
          expect([statusName(result.status), result.reasonCode]).toEqual([before.status, before.reason_code]);
        } else {
          decidedByB += 1;
          expect(`${statusName(result.status)} ${result.reasonCode}`.trim()).toMatch(/^(SETTLED|REJECTED AM04)$/);
        }
      });
    }
    // The held-back proxy made sure the replay of a committed, unanswered instruction was exercised.
    expect(committedBeforeKill.size, 'no instruction was committed by A but left unanswered').toBeGreaterThan(0);

    // --- nothing applied twice -----------------------------------------------------
    const final = await storedTransfers();
    expect(final).toHaveLength(sentKeys.size);
    expect(new Set(final.map((t) => key(t.debtor_agent, t.instruction_id))).size).toBe(sentKeys.size);
    expect(new Set(final.map((t) => t.uetr)).size).toBe(sentKeys.size);
    // Each bank's balance is exactly what the answers (first or retried) say.
    const expected = new Map<string, bigint>(bics.map((bic) => [bic, fundedMinor]));
    let settledTotal = 0;
    for (const call of calls) {
      call.requests.forEach((request, i) => {
        if (call.results?.[i]?.status !== TransferStatus.TRANSFER_STATUS_SETTLED) return;
        settledTotal += 1;
        const amount = request.amount?.amountMinor ?? 0n;
        expected.set(request.debtorAgent, (expected.get(request.debtorAgent) ?? 0n) - amount);
        expected.set(request.creditorAgent, (expected.get(request.creditorAgent) ?? 0n) + amount);
      });
    }
    const finalBalances = await balances();
    expect(finalBalances).toEqual(Object.fromEntries(expected));
    expect(Object.values(finalBalances).reduce((sum, v) => sum + v, 0n)).toBe(fundedTotalMinor);
    expect(final.filter((t) => t.status === 'SETTLED')).toHaveLength(settledTotal);

    const second = await operatorB.reconcile({});
    expect(second.violations).toEqual([]);
    expect(second.clean).toBe(true);

    const answeredTransfers = answered.reduce((n, c) => n + c.requests.length, 0);
    console.log(
      `[crash] ${calls.length} calls (${sentKeys.size} transfers) to node-a in ${Math.round(killedAtMs - loadStartedMs)} ms; ` +
        `answered: ${answered.length} calls (${answeredTransfers} transfers, ${answeredSettled} settled); ` +
        `unanswered: ${unanswered.length} calls (gRPC codes ${[...new Set(unanswered.map((c) => c.error?.code))].join(',')}) with ` +
        `${committedBeforeKill.size} transfers committed by node-a (replayed by node-b) and ${decidedByB} not (decided by node-b); ` +
        `settlement transactions cut short by the kill ${batchesCutShort}; node-a's backends gone ${backendsGoneMs} ms after the kill; ` +
        `settled in all ${settledTotal}`,
    );
  }, 60_000);
});
