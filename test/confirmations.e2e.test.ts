// Settlement confirmations: a resumable, ordered stream per participant (and
// its paginated twin), across reconnects and node processes, with bounded
// buffers for slow consumers and a retention window.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status } from '@grpc/grpc-js';
import { ConfirmationRole } from '../src/gen/clearing/v1/confirmation.js';
import { ParticipantKind } from '../src/gen/clearing/v1/participant.js';
import { TransferStatus, type CreditTransfer } from '../src/gen/clearing/v1/transfer.js';
import type { StreamConfirmationsResponse } from '../src/gen/clearing/v1/clearing_service.js';
import { clearingClient, failure, type ClearingClient } from './support/clients.js';
import { startNodeProcess, stopAllNodeProcesses } from './support/process.js';
import { createBank, freshBic, transfer } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';
import { readStream } from './support/streams.js';

let a: TestNode;
let b: TestNode;

beforeAll(async () => {
  const env = { CLEARING_STREAM_LAG_MAX: '50', CLEARING_STREAM_STALL_MS: '2000' };
  a = await startTestNode(env);
  b = await startTestNode(env, a.databaseUrl);
});
afterAll(async () => {
  await stopAllNodeProcesses();
  await b?.stop();
  await a?.stop();
});

async function pair(fundMinor = 100_000_000n) {
  const debtor = freshBic('S', 'DEFF');
  const creditor = freshBic('R', 'FRPP');
  await createBank(a.operator, debtor, fundMinor);
  await createBank(a.operator, creditor);
  return { debtor, creditor, payer: a.participant(debtor), payee: a.participant(creditor) };
}

function confirmations(client: ClearingClient, afterSequence: bigint) {
  return readStream<StreamConfirmationsResponse>(client.raw.streamConfirmations({ afterSequence }, client.metadata()));
}

/** Submits `count` transfers in batches of up to 1,000; returns them in submission order. */
async function pay(client: ClearingClient, debtor: string, creditor: string, count: number, extra: Partial<CreditTransfer> = {}) {
  const all: CreditTransfer[] = [];
  for (let done = 0; done < count; done += 1000) {
    const batch = Array.from({ length: Math.min(1000, count - done) }, (_, i) => transfer(debtor, creditor, BigInt(done + i + 1), extra));
    await client.submitTransfers({ transfers: batch, waitForFinal: false });
    all.push(...batch);
  }
  return all;
}

describe('StreamConfirmations', () => {
  test('resume from any point: no gap, no duplicate, across several disconnects', async () => {
    const { debtor, creditor, payer, payee } = await pair();
    const sent = await pay(payer, debtor, creditor, 40);
    const seen: bigint[] = [];
    const uetrs: string[] = [];
    let last = 0n;
    for (const take of [7, 1, 13, 19]) {
      const stream = confirmations(payee, last);
      for (let i = 0; i < take; i++) {
        const c = (await stream.next()).confirmation;
        seen.push(c?.sequence ?? -1n);
        uetrs.push(c?.uetr ?? '');
        last = c?.sequence ?? last;
      }
      stream.cancel();
    }
    expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => BigInt(i + 1)));
    expect(uetrs).toEqual(sent.map((t) => t.uetr));
  });

  test('each confirmation carries what a bank needs', async () => {
    const { debtor, creditor, payer, payee } = await pair();
    const request = transfer(debtor, creditor, 1234n);
    await payer.submitTransfer({ transfer: request, waitForFinal: false });
    const rejected = transfer(debtor, 'NOPEDEFFXXX', 5n);
    await payer.submitTransfer({ transfer: rejected, waitForFinal: false });
    const mine = confirmations(payer, 0n);
    const first = (await mine.next()).confirmation;
    expect(first).toMatchObject({
      sequence: 1n,
      uetr: request.uetr,
      instructionId: request.instructionId,
      endToEndId: request.endToEndId,
      role: ConfirmationRole.CONFIRMATION_ROLE_DEBTOR,
      status: TransferStatus.TRANSFER_STATUS_SETTLED,
      reasonCode: '',
      amount: { currency: 'EUR', amountMinor: 1234n },
      counterpartyBic: creditor,
      debtorAgent: debtor,
      creditorAgent: creditor,
    });
    expect(first?.finalTime).toBeInstanceOf(Date);
    expect((await mine.next()).confirmation).toMatchObject({ sequence: 2n, status: TransferStatus.TRANSFER_STATUS_REJECTED, reasonCode: 'RC01' });
    mine.cancel();
    const theirs = confirmations(payee, 0n);
    expect((await theirs.next()).confirmation).toMatchObject({ sequence: 1n, role: ConfirmationRole.CONFIRMATION_ROLE_CREDITOR, counterpartyBic: debtor });
    // The unknown creditor of the RC01 rejection has no participant to confirm to.
    expect(await theirs.drainFor(300)).toEqual([]);
    theirs.cancel();
  });

  test('live delivery of a settlement made by another node instance', async () => {
    const { debtor, creditor, payee } = await pair();
    const stream = confirmations(payee, 0n);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    const request = transfer(debtor, creditor, 10n);
    await b.participant(debtor).submitTransfer({ transfer: request, waitForFinal: false });
    expect((await stream.next(3_000)).confirmation?.uetr).toBe(request.uetr);
    // Woken by NOTIFY, not by the 1 s polling fallback.
    expect(Date.now() - started).toBeLessThan(900);
    stream.cancel();
  });

  test('live delivery of a settlement made by a second node process', async () => {
    const { debtor, creditor, payee } = await pair();
    const other = await startNodeProcess({ databaseUrl: a.databaseUrl, name: 'confirmations-other' });
    try {
      const stream = confirmations(payee, 0n);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const payerElsewhere = clearingClient(other.address, `participant/${debtor}`);
      const requests = [transfer(debtor, creditor, 1n), transfer(debtor, creditor, 2n), transfer(debtor, creditor, 3n)];
      for (const request of requests) {
        const started = Date.now();
        await payerElsewhere.submitTransfer({ transfer: request, waitForFinal: false });
        expect((await stream.next(3_000)).confirmation?.uetr).toBe(request.uetr);
        expect(Date.now() - started).toBeLessThan(900);
      }
      stream.cancel();
      payerElsewhere.raw.close();
    } finally {
      await other.stop();
    }
  });

  test('a gateway sees exactly the transfers that name it, and nobody sees another\'s', async () => {
    const gateway = 'GATEUS33XXX';
    await createBank(a.operator, gateway, 0n, { kind: ParticipantKind.PARTICIPANT_KIND_GATEWAY });
    const { debtor, creditor, payer } = await pair();
    const outsider = await pair();
    const named = [transfer(debtor, creditor, 1n, { intermediaryAgent: gateway }), transfer(debtor, creditor, 3n, { intermediaryAgent: gateway })];
    await payer.submitTransfers({ transfers: [named[0] as CreditTransfer, transfer(debtor, creditor, 2n), named[1] as CreditTransfer], waitForFinal: false });
    const stream = confirmations(a.participant(gateway), 0n);
    const got = [await stream.next(), await stream.next()].map((m) => m.confirmation);
    expect(got.map((c) => [c?.uetr, c?.role, c?.counterpartyBic])).toEqual(named.map((t) => [t.uetr, ConfirmationRole.CONFIRMATION_ROLE_INTERMEDIARY, creditor]));
    expect(await stream.drainFor(300)).toEqual([]);
    stream.cancel();
    const other = confirmations(outsider.payee, 0n);
    expect(await other.drainFor(300)).toEqual([]);
    other.cancel();
  });

  test('10,000 confirmations arrive in order', async () => {
    const { debtor, creditor, payer, payee } = await pair();
    const stream = confirmations(payee, 0n);
    await pay(payer, debtor, creditor, 10_000);
    let expected = 1n;
    for (let i = 0; i < 10_000; i++) {
      const c = (await stream.next(10_000)).confirmation;
      expect(c?.sequence).toBe(expected);
      expected += 1n;
    }
    expect(await stream.drainFor(200)).toEqual([]);
    stream.cancel();
  }, 120_000);

  test('live confirmations equal the stored ones, also when another node instance commits in between', async () => {
    // Node a feeds its live streams from memory after its own commits; node b's
    // commits reach a's memory only as gaps, which a must read from the database.
    const { debtor, creditor, payer, payee } = await pair(1_000_000n);
    const gateway = freshBic('G', 'USNY');
    await createBank(a.operator, gateway, 0n, { kind: ParticipantKind.PARTICIPANT_KIND_GATEWAY });
    const streams = { payer: confirmations(payer, 0n), payee: confirmations(payee, 0n), gateway: confirmations(a.participant(gateway), 0n) };
    await new Promise((resolve) => setTimeout(resolve, 100));
    const payerOnB = b.participant(debtor);
    let sent = 0;
    for (let round = 0; round < 6; round++) {
      const via = round % 2 === 0 ? payer : payerOnB;
      const transfers = [
        transfer(debtor, creditor, BigInt(100 + round), { intermediaryAgent: gateway }),
        transfer(debtor, creditor, 10_000_000n), // more than the debtor holds: REJECTED AM04
        transfer(debtor, creditor, BigInt(200 + round)),
      ];
      await via.submitTransfers({ transfers, waitForFinal: false });
      sent += transfers.length;
    }
    const expectedCount = { payer: sent, payee: sent, gateway: 6 };
    for (const [who, client] of [['payer', payer], ['payee', payee], ['gateway', a.participant(gateway)]] as const) {
      const live = [];
      for (let i = 0; i < expectedCount[who]; i++) live.push((await streams[who].next(5_000)).confirmation);
      expect(await streams[who].drainFor(200)).toEqual([]);
      streams[who].cancel();
      expect(live.map((c) => c?.sequence)).toEqual(Array.from({ length: expectedCount[who] }, (_, i) => BigInt(i + 1)));
      const stored = await client.listConfirmations({ afterSequence: 0n, pageSize: 100, pageToken: '' });
      expect(live).toEqual(stored.confirmations);
    }
  });

  test('a stalled consumer is cut off without delaying a fast one or settlement', async () => {
    const { debtor, creditor, payer, payee } = await pair();
    const slowCall = payee.raw.streamConfirmations({ afterSequence: 0n }, payee.metadata());
    const slow = readStream<StreamConfirmationsResponse>(slowCall);
    slowCall.pause();
    const fast = confirmations(payee, 0n);
    const submitStarted = Date.now();
    await pay(payer, debtor, creditor, 3_000);
    const submitMs = Date.now() - submitStarted;
    // The fast subscriber of the same participant gets everything, in order.
    for (let i = 1; i <= 3_000; i++) expect((await fast.next(10_000)).confirmation?.sequence).toBe(BigInt(i));
    fast.cancel();
    // Settlement was not held back by the stalled reader (3,000 transfers in 3 batches).
    expect(submitMs).toBeLessThan(15_000);
    // The server gives up on the stalled stream within a few lag checks. The
    // client learns it once it reads again: the status sits behind the data.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    slowCall.resume();
    const ended = await slow.ended;
    expect(ended.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(ended.details).toMatch(/after_sequence/);
    const received = await slow.drainFor(0);
    expect(received.length).toBeGreaterThan(0);
    expect(received.length).toBeLessThan(3_000);
  }, 60_000);
});

describe('ListConfirmations', () => {
  test('pages through everything in order, then comes back empty until more arrive', async () => {
    const { debtor, creditor, payer, payee } = await pair();
    await pay(payer, debtor, creditor, 25);
    const seen: bigint[] = [];
    let token = '';
    for (let pages = 0; pages < 10; pages++) {
      const page = await payee.listConfirmations({ afterSequence: 0n, pageSize: 10, pageToken: token });
      seen.push(...page.confirmations.map((c) => c.sequence));
      token = page.nextPageToken;
      if (token === '') break;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => BigInt(i + 1)));
    const after = await payee.listConfirmations({ afterSequence: 25n, pageSize: 10, pageToken: '' });
    expect(after.confirmations).toEqual([]);
  });
});

describe('retention', () => {
  test('purged confirmations answer OUT_OF_RANGE naming the oldest still kept', async () => {
    const r = await startTestNode({ CLEARING_CONFIRMATION_RETENTION_SECONDS: '1', CLEARING_RETENTION_SWEEP_INTERVAL_MS: '100' });
    try {
      await createBank(r.operator, 'RETADEFFXXX', 1_000n);
      await createBank(r.operator, 'RETBFRPPXXX');
      const payer = r.participant('RETADEFFXXX');
      await payer.submitTransfers({ transfers: [transfer('RETADEFFXXX', 'RETBFRPPXXX', 1n), transfer('RETADEFFXXX', 'RETBFRPPXXX', 2n)], waitForFinal: false });
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await payer.submitTransfer({ transfer: transfer('RETADEFFXXX', 'RETBFRPPXXX', 3n), waitForFinal: false });
      const f = await failure(payer.listConfirmations({ afterSequence: 0n, pageSize: 0, pageToken: '' }));
      expect(f.code).toBe(status.OUT_OF_RANGE);
      expect(f.message).toMatch(/oldest available is 3/);
      const stream = confirmations(payer, 1n);
      expect((await stream.ended).code).toBe(status.OUT_OF_RANGE);
      const kept = await payer.listConfirmations({ afterSequence: 2n, pageSize: 0, pageToken: '' });
      expect(kept.confirmations.map((c) => c.sequence)).toEqual([3n]);
    } finally {
      await r.stop();
    }
  });
});
