// Creditor acceptance and reservation timeouts: transfers to an EXPLICIT
// creditor are reserved, streamed to the creditor, and settled, rejected or
// expired — exactly once, whichever node process the parties talk to.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status } from '@grpc/grpc-js';
import type pg from 'pg';
import { openTestPool } from './support/database.js';
import { AcceptanceMode } from '../src/gen/clearing/v1/participant.js';
import { CreditorDecision, TransferStatus } from '../src/gen/clearing/v1/transfer.js';
import type { StreamInboundTransfersResponse } from '../src/gen/clearing/v1/clearing_service.js';
import { failure, type ClearingClient } from './support/clients.js';
import { createBank, freshBic, transfer } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';
import { readStream } from './support/streams.js';

const reservationTimeoutMs = 1_500;
const env = { CLEARING_RESERVATION_TIMEOUT_MS: String(reservationTimeoutMs), CLEARING_EXPIRY_SWEEP_INTERVAL_MS: '50' };

let a: TestNode;
let b: TestNode;
let db: pg.Pool;

beforeAll(async () => {
  a = await startTestNode(env);
  // A second node process on the same database (in-process here; crash tests use real processes).
  b = await startTestNode(env, a.databaseUrl);
  db = openTestPool(a.databaseUrl, 2);
});
afterAll(async () => {
  await db?.end();
  await b?.stop();
  await a?.stop();
});

/** A funded debtor (AUTOMATIC) and an EXPLICIT creditor, both fresh. */
async function pair(fundMinor = 10_000n) {
  const debtor = freshBic('P', 'DEFF');
  const creditor = freshBic('Q', 'FRPP');
  await createBank(a.operator, debtor, fundMinor);
  await createBank(a.operator, creditor, 0n, { acceptanceMode: AcceptanceMode.ACCEPTANCE_MODE_EXPLICIT });
  return { debtor, creditor, payer: a.participant(debtor), payee: a.participant(creditor) };
}

async function positionOf(bic: string) {
  const page = await a.operator.listPositions({ bic, currency: 'EUR', pageSize: 0, pageToken: '' });
  return page.positions[0];
}

function inbound(client: ClearingClient) {
  return readStream<StreamInboundTransfersResponse>(client.raw.streamInboundTransfers({}, client.metadata()));
}

async function confirmationsOf(uetr: string) {
  const { rows } = await db.query(
    `SELECT c.bic, c.role, c.status, c.reason_code FROM confirmations c JOIN transfers t USING (debtor_agent, instruction_id)
      WHERE t.uetr = $1 AND t.reason_code <> 'DUPL' ORDER BY c.role DESC`,
    [uetr],
  );
  return rows as { bic: string; role: string; status: string; reason_code: string }[];
}

const accept = (uetr: string) => ({ answer: { uetr, decision: CreditorDecision.CREDITOR_DECISION_ACCEPT, reasonCode: '' } });
const reject = (uetr: string, reasonCode: string) => ({ answer: { uetr, decision: CreditorDecision.CREDITOR_DECISION_REJECT, reasonCode } });

describe('accept, reject, expire', () => {
  test('accept: RESERVED counts against available, then settles', async () => {
    const { debtor, creditor, payer, payee } = await pair(10_000n);
    const stream = inbound(payee);
    const request = transfer(debtor, creditor, 4_000n);
    const { result } = await payer.submitTransfer({ transfer: request, waitForFinal: false });
    expect(result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_RESERVED, reasonCode: '' });
    expect(result?.expireTime?.getTime()).toBeGreaterThan(Date.now());
    expect(await positionOf(debtor)).toMatchObject({ balanceMinor: 10_000n, reservedMinor: 4_000n, availableMinor: 6_000n });

    const delivered = await stream.next();
    expect(delivered.transfer?.transfer).toMatchObject({ uetr: request.uetr, instructionId: request.instructionId, debtorAgent: debtor });
    expect(delivered.transfer?.expireTime).toBeInstanceOf(Date);

    const answered = await payee.respondToTransfer(accept(request.uetr));
    expect(answered.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_SETTLED, replayed: false });
    expect(answered.result?.reservedTime).toBeInstanceOf(Date);
    expect(answered.result?.finalTime).toBeInstanceOf(Date);
    expect(await positionOf(debtor)).toMatchObject({ balanceMinor: 6_000n, reservedMinor: 0n, availableMinor: 6_000n });
    expect(await positionOf(creditor)).toMatchObject({ balanceMinor: 4_000n });
    expect(await confirmationsOf(request.uetr)).toEqual([
      { bic: debtor, role: 'DEBTOR', status: 'SETTLED', reason_code: '' },
      { bic: creditor, role: 'CREDITOR', status: 'SETTLED', reason_code: '' },
    ]);
    stream.cancel();
    expect((await a.operator.reconcile({})).clean).toBe(true);
  });

  test('reject with a reason: the reservation is released', async () => {
    const { debtor, creditor, payer, payee } = await pair(10_000n);
    const request = transfer(debtor, creditor, 4_000n);
    await payer.submitTransfer({ transfer: request, waitForFinal: false });
    const answered = await payee.respondToTransfer(reject(request.uetr, 'AC04'));
    expect(answered.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_REJECTED, reasonCode: 'AC04' });
    expect(answered.result?.reason).toMatch(/closed/);
    expect(await positionOf(debtor)).toMatchObject({ balanceMinor: 10_000n, reservedMinor: 0n, availableMinor: 10_000n });
    expect((await confirmationsOf(request.uetr)).map((c) => [c.role, c.status, c.reason_code])).toEqual([
      ['DEBTOR', 'REJECTED', 'AC04'],
      ['CREDITOR', 'REJECTED', 'AC04'],
    ]);
  });

  test('no answer in time: EXPIRED AB05, released, confirmed to both banks', async () => {
    const { debtor, creditor, payer } = await pair(10_000n);
    const request = transfer(debtor, creditor, 4_000n);
    await payer.submitTransfer({ transfer: request, waitForFinal: false });
    await new Promise((resolve) => setTimeout(resolve, reservationTimeoutMs + 700));
    const got = await payer.getTransfer({ lookup: { $case: 'uetr', value: request.uetr } });
    expect(got.transfer?.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_EXPIRED, reasonCode: 'AB05' });
    expect(await positionOf(debtor)).toMatchObject({ balanceMinor: 10_000n, reservedMinor: 0n });
    expect((await confirmationsOf(request.uetr)).map((c) => [c.role, c.status, c.reason_code])).toEqual([
      ['DEBTOR', 'EXPIRED', 'AB05'],
      ['CREDITOR', 'EXPIRED', 'AB05'],
    ]);
    // Answering after expiry returns the EXPIRED result.
    const late = await a.participant(creditor).respondToTransfer(accept(request.uetr));
    expect(late.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_EXPIRED, reasonCode: 'AB05', replayed: true });
    expect((await a.operator.reconcile({})).clean).toBe(true);
  });

  test('wait_for_final returns the creditor\'s outcome', async () => {
    const { debtor, creditor, payer, payee } = await pair(10_000n);
    const stream = inbound(payee);
    const request = transfer(debtor, creditor, 100n);
    const waiting = payer.submitTransfer({ transfer: request, waitForFinal: true }, { deadline: Date.now() + 10_000 });
    const delivered = await stream.next();
    await payee.respondToTransfer(accept(delivered.transfer?.transfer?.uetr ?? ''));
    expect((await waiting).result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_SETTLED, replayed: false });
    stream.cancel();
  });

  test('wait_for_final with a short deadline returns RESERVED before the deadline', async () => {
    const { debtor, creditor, payer } = await pair(10_000n);
    const started = Date.now();
    const { result } = await payer.submitTransfer({ transfer: transfer(debtor, creditor, 100n), waitForFinal: true }, { deadline: Date.now() + 400 });
    expect(result?.status).toBe(TransferStatus.TRANSFER_STATUS_RESERVED);
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});

describe('who may answer, and answering twice', () => {
  test('only the creditor agent may answer', async () => {
    const { debtor, creditor, payer } = await pair();
    const request = transfer(debtor, creditor, 100n);
    await payer.submitTransfer({ transfer: request, waitForFinal: false });
    const byDebtor = await failure(payer.respondToTransfer(accept(request.uetr)));
    expect(byDebtor.code).toBe(status.PERMISSION_DENIED);
    expect(byDebtor.reason).toBe('NOT_CREDITOR_AGENT');
    const outsider = await pair();
    expect((await failure(outsider.payee.respondToTransfer(accept(request.uetr)))).code).toBe(status.NOT_FOUND);
    expect((await positionOf(debtor))?.reservedMinor).toBe(100n);
  });

  test('a second answer returns the first final result', async () => {
    const { debtor, creditor, payer, payee } = await pair();
    const request = transfer(debtor, creditor, 100n);
    await payer.submitTransfer({ transfer: request, waitForFinal: false });
    const first = await payee.respondToTransfer(reject(request.uetr, 'AC06'));
    const second = await payee.respondToTransfer(accept(request.uetr));
    expect(second.result).toEqual({ ...first.result, replayed: true });
    expect((await positionOf(creditor))?.balanceMinor).toBe(0n);
  });

  test('malformed answers are INVALID_ARGUMENT', async () => {
    const { payee } = await pair();
    const f = await failure(
      payee.respondToTransfers({
        answers: [
          { uetr: 'nope', decision: CreditorDecision.CREDITOR_DECISION_ACCEPT, reasonCode: '' },
          { uetr: crypto.randomUUID(), decision: CreditorDecision.CREDITOR_DECISION_REJECT, reasonCode: '' },
          { uetr: crypto.randomUUID(), decision: CreditorDecision.CREDITOR_DECISION_UNSPECIFIED, reasonCode: '' },
        ],
      }),
    );
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.fields).toEqual(['answers[0].uetr', 'answers[1].reason_code', 'answers[2].decision']);
  });

  test('RespondToTransfers answers several in order', async () => {
    const { debtor, creditor, payer, payee } = await pair(10_000n);
    const requests = [transfer(debtor, creditor, 1n), transfer(debtor, creditor, 2n), transfer(debtor, creditor, 3n)];
    await payer.submitTransfers({ transfers: requests, waitForFinal: false });
    const { results } = await payee.respondToTransfers({
      answers: [
        accept(requests[0]?.uetr ?? '').answer,
        reject(requests[1]?.uetr ?? '', 'MS03').answer,
        accept(requests[2]?.uetr ?? '').answer,
      ],
    });
    expect(results.map((r) => [r.uetr, r.status])).toEqual([
      [requests[0]?.uetr, TransferStatus.TRANSFER_STATUS_SETTLED],
      [requests[1]?.uetr, TransferStatus.TRANSFER_STATUS_REJECTED],
      [requests[2]?.uetr, TransferStatus.TRANSFER_STATUS_SETTLED],
    ]);
    expect((await positionOf(creditor))?.balanceMinor).toBe(4n);
  });
});

describe('the inbound stream', () => {
  test('a (re)connect delivers the backlog once per connection, then live ones', async () => {
    const { debtor, creditor, payer, payee } = await pair(10_000n);
    const backlog = [transfer(debtor, creditor, 1n), transfer(debtor, creditor, 2n), transfer(debtor, creditor, 3n)];
    await payer.submitTransfers({ transfers: backlog, waitForFinal: false });

    const first = inbound(payee);
    const got = [await first.next(), await first.next(), await first.next()].map((m) => m.transfer?.transfer?.uetr);
    expect(got).toEqual(backlog.map((t) => t.uetr));
    const live = transfer(debtor, creditor, 4n);
    await payer.submitTransfer({ transfer: live, waitForFinal: false });
    expect((await first.next()).transfer?.transfer?.uetr).toBe(live.uetr);
    expect(await first.drainFor(300)).toEqual([]);
    first.cancel();

    // Reconnect: everything still pending, once each, in order.
    await payee.respondToTransfer(accept(backlog[1]?.uetr ?? ''));
    const second = inbound(payee);
    const again = [await second.next(), await second.next(), await second.next()].map((m) => m.transfer?.transfer?.uetr);
    expect(again).toEqual([backlog[0]?.uetr, backlog[2]?.uetr, live.uetr]);
    expect(await second.drainFor(300)).toEqual([]);
    second.cancel();
  });

  test('the creditor streams from node B while the debtor submits on node A', async () => {
    const { debtor, creditor, payer } = await pair(10_000n);
    const payeeOnB = b.participant(creditor);
    const stream = inbound(payeeOnB);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    const request = transfer(debtor, creditor, 10n);
    await payer.submitTransfer({ transfer: request, waitForFinal: false });
    const delivered = await stream.next(3_000);
    expect(delivered.transfer?.transfer?.uetr).toBe(request.uetr);
    // Woken by NOTIFY, not by the 1 s polling fallback.
    expect(Date.now() - started).toBeLessThan(900);
    const answered = await payeeOnB.respondToTransfer(accept(request.uetr));
    expect(answered.result?.status).toBe(TransferStatus.TRANSFER_STATUS_SETTLED);
    stream.cancel();
  });

  test('fed from memory, a stream delivers what the database holds: in order, not what was answered since, also around another node\'s reservations', async () => {
    // Node a keeps what it reserves for a creditor streaming from it, and
    // answers find their transfers there; node b's streams, opened after the
    // fact, read the database. Both must show the same.
    const { debtor, creditor, payer, payee } = await pair(1_000_000n);
    const live = inbound(payee);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const first = Array.from({ length: 6 }, (_, i) => transfer(debtor, creditor, BigInt(i + 1)));
    await payer.submitTransfers({ transfers: first, waitForFinal: false });
    const delivered = [];
    for (let i = 0; i < first.length; i++) delivered.push((await live.next(3_000)).transfer);
    expect(delivered.map((m) => m?.transfer?.uetr)).toEqual(first.map((t) => t.uetr));

    // Answered through node a: the checks on who answers still hold.
    const uetrOf = (i: number) => first[i]?.uetr ?? '';
    expect((await failure(payer.respondToTransfer(accept(uetrOf(0))))).reason).toBe('NOT_CREDITOR_AGENT');
    const outsider = await pair();
    expect((await failure(outsider.payee.respondToTransfer(accept(uetrOf(0))))).code).toBe(status.NOT_FOUND);
    const { results } = await payee.respondToTransfers({
      answers: [accept(uetrOf(1)).answer, reject(uetrOf(3), 'AC04').answer, accept(uetrOf(5)).answer],
    });
    expect(results.map((r) => r.status)).toEqual([
      TransferStatus.TRANSFER_STATUS_SETTLED,
      TransferStatus.TRANSFER_STATUS_REJECTED,
      TransferStatus.TRANSFER_STATUS_SETTLED,
    ]);

    // A new connection on node a (memory) and one on node b (the database): the three still waiting.
    const backlog = async (client: ClearingClient, count: number) => {
      const stream = inbound(client);
      const got = [];
      for (let i = 0; i < count; i++) got.push((await stream.next(3_000)).transfer);
      expect(await stream.drainFor(300)).toEqual([]);
      stream.cancel();
      return got;
    };
    const waiting = [delivered[0], delivered[2], delivered[4]];
    const again = inbound(payee);
    const fromMemory = [];
    for (let i = 0; i < 3; i++) fromMemory.push((await again.next(3_000)).transfer);
    expect(fromMemory).toEqual(waiting);
    expect(await backlog(b.participant(creditor), 3)).toEqual(waiting);

    // Node b reserves two (a gap in node a's memory), then node a two more.
    // The second connection's cursor sits before the last one of node a's
    // run, which was answered: it must still get past it to node b's.
    const fromB = [transfer(debtor, creditor, 7n), transfer(debtor, creditor, 8n)];
    await b.participant(debtor).submitTransfers({ transfers: fromB, waitForFinal: false });
    const seenAgain = [(await again.next(3_000)).transfer, (await again.next(3_000)).transfer];
    expect(seenAgain.map((m) => m?.transfer?.uetr)).toEqual(fromB.map((t) => t.uetr));
    const fromA = [transfer(debtor, creditor, 9n), transfer(debtor, creditor, 10n)];
    await payer.submitTransfers({ transfers: fromA, waitForFinal: false });
    const later = [];
    for (let i = 0; i < 4; i++) later.push((await live.next(3_000)).transfer);
    for (let i = 0; i < 2; i++) seenAgain.push((await again.next(3_000)).transfer);
    for (const stream of [live, again]) {
      expect(await stream.drainFor(300)).toEqual([]);
      stream.cancel();
    }
    expect(later.map((m) => m?.transfer?.uetr)).toEqual([...fromB, ...fromA].map((t) => t.uetr));
    expect(seenAgain).toEqual(later);
    expect(await backlog(b.participant(creditor), 7)).toEqual([...waiting, ...later]);

    // Every one of them answered through node a, whichever node reserved it.
    const rest = [uetrOf(0), uetrOf(2), uetrOf(4), ...[...fromB, ...fromA].map((t) => t.uetr)];
    const settled = await payee.respondToTransfers({ answers: rest.map((uetr) => accept(uetr).answer) });
    expect(settled.results.map((r) => [r.uetr, r.status])).toEqual(rest.map((uetr) => [uetr, TransferStatus.TRANSFER_STATUS_SETTLED]));
    expect((await a.operator.reconcile({})).clean).toBe(true);
  });

  test('a participant never sees another creditor\'s transfers', async () => {
    const one = await pair(10_000n);
    const two = await pair(10_000n);
    const stream = inbound(two.payee);
    await one.payer.submitTransfer({ transfer: transfer(one.debtor, one.creditor, 5n), waitForFinal: false });
    expect(await stream.drainFor(400)).toEqual([]);
    stream.cancel();
  });
});

describe('races', () => {
  test('an answer racing expiry: exactly one outcome, the same for both banks', async () => {
    const { debtor, creditor, payer, payee } = await pair(1_000_000n);
    const requests = Array.from({ length: 20 }, (_, i) => transfer(debtor, creditor, BigInt(i + 1)));
    await payer.submitTransfers({ transfers: requests, waitForFinal: false });
    // Answer each close to its expiry, from both nodes, while both nodes sweep.
    await new Promise((resolve) => setTimeout(resolve, reservationTimeoutMs - 60));
    const payeeOnB = b.participant(creditor);
    const answers = await Promise.all(
      requests.map((r, i) => new Promise((resolve) => setTimeout(resolve, i * 6)).then(() => (i % 2 === 0 ? payee : payeeOnB).respondToTransfer(accept(r.uetr)))),
    );
    let settled = 0n;
    for (const [i, r] of requests.entries()) {
      const answer = answers[i]?.result;
      const stored = (await payer.getTransfer({ lookup: { $case: 'uetr', value: r.uetr } })).transfer?.result;
      expect([TransferStatus.TRANSFER_STATUS_SETTLED, TransferStatus.TRANSFER_STATUS_EXPIRED]).toContain(stored?.status);
      expect(answer?.status).toBe(stored?.status);
      const confirmations = await confirmationsOf(r.uetr);
      expect(confirmations).toHaveLength(2);
      const name = stored?.status === TransferStatus.TRANSFER_STATUS_SETTLED ? 'SETTLED' : 'EXPIRED';
      expect(confirmations.map((c) => c.status)).toEqual([name, name]);
      if (name === 'SETTLED') settled += r.amount?.amountMinor ?? 0n;
    }
    expect(await positionOf(creditor)).toMatchObject({ balanceMinor: settled });
    expect(await positionOf(debtor)).toMatchObject({ balanceMinor: 1_000_000n - settled, reservedMinor: 0n });
    expect((await a.operator.reconcile({})).clean).toBe(true);
  });
});
