// The settlement queue's limits: a full queue answers RESOURCE_EXHAUSTED
// (never unbounded memory), and a call cancelled or past its deadline before
// its batch starts is not applied.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { status } from '@grpc/grpc-js';
import { TransferStatus } from '../src/gen/clearing/v1/transfer.js';
import { failure } from './support/clients.js';
import { createBank, transfer } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';

let t: TestNode;

beforeAll(async () => {
  // A small queue and a loop that lingers 100 ms before each batch, so calls
  // pile up and deadlines pass while they wait.
  t = await startTestNode({
    CLEARING_QUEUE_OPERATIONS_MAX: '10',
    CLEARING_BATCH_OPERATIONS_MAX: '10',
    CLEARING_SUBMIT_BATCH_TRANSFERS_MAX: '10',
    CLEARING_BATCH_WAIT_MS: '100',
  });
  await createBank(t.operator, 'LIMADEFFXXX', 1_000_000n);
  await createBank(t.operator, 'LIMBFRPPXXX');
});
afterAll(async () => {
  await t?.stop();
});

async function stored(instructionIds: string[]): Promise<string[]> {
  const page = await t.operator.listTransfers({ bic: 'LIMADEFFXXX', status: TransferStatus.TRANSFER_STATUS_UNSPECIFIED, pageSize: 1000, pageToken: '' });
  return page.transfers.map((r) => r.transfer?.instructionId ?? '').filter((id) => instructionIds.includes(id));
}

test('a full settlement queue answers RESOURCE_EXHAUSTED and stores nothing for that call', async () => {
  const payer = t.participant('LIMADEFFXXX');
  const first = Array.from({ length: 8 }, () => transfer('LIMADEFFXXX', 'LIMBFRPPXXX', 1n));
  const second = Array.from({ length: 8 }, () => transfer('LIMADEFFXXX', 'LIMBFRPPXXX', 1n));
  const accepted = payer.submitTransfers({ transfers: first, waitForFinal: false });
  await new Promise((resolve) => setTimeout(resolve, 20));
  const f = await failure(payer.submitTransfers({ transfers: second, waitForFinal: false }));
  expect(f.code).toBe(status.RESOURCE_EXHAUSTED);
  expect(f.reason).toBe('SETTLEMENT_QUEUE_FULL');
  expect((await accepted).results.every((r) => r.status === TransferStatus.TRANSFER_STATUS_SETTLED)).toBe(true);
  expect(await stored(second.map((x) => x.instructionId))).toEqual([]);
});

test('a call past its deadline before its batch starts is not applied', async () => {
  const payer = t.participant('LIMADEFFXXX');
  const late = transfer('LIMADEFFXXX', 'LIMBFRPPXXX', 1n);
  const f = await failure(payer.submitTransfer({ transfer: late, waitForFinal: false }, { deadline: Date.now() + 30 }));
  expect(f.code).toBe(status.DEADLINE_EXCEEDED);
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(await stored([late.instructionId])).toEqual([]);
  // The same instruction, sent again in time, is applied once.
  const again = await payer.submitTransfer({ transfer: late, waitForFinal: false });
  expect(again.result).toMatchObject({ status: TransferStatus.TRANSFER_STATUS_SETTLED, replayed: false });
});

test('a call cancelled before its batch starts is not applied', async () => {
  const payer = t.participant('LIMADEFFXXX');
  const cancelled = transfer('LIMADEFFXXX', 'LIMBFRPPXXX', 1n);
  const call = payer.raw.submitTransfer({ transfer: cancelled, waitForFinal: false }, payer.metadata(), {}, () => {});
  await new Promise((resolve) => setTimeout(resolve, 10));
  call.cancel();
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(await stored([cancelled.instructionId])).toEqual([]);
});
