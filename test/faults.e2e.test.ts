// Database faults under load: connections killed mid-batch fail their batch
// cleanly (UNAVAILABLE, nothing half-applied), the node survives, and the
// settlement loop goes on once the database answers again.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { status, type ServiceError } from '@grpc/grpc-js';
import type pg from 'pg';
import { openTestPool } from './support/database.js';
import { TransferStatus } from '../src/gen/clearing/v1/transfer.js';
import { createBank, transfer } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';

let t: TestNode;
let admin: pg.Pool;

beforeAll(async () => {
  t = await startTestNode();
  admin = openTestPool(t.databaseUrl, 1);
  await createBank(t.operator, 'FLTADEFFXXX', 1_000_000n);
  await createBank(t.operator, 'FLTBFRPPXXX', 1_000_000n);
});
afterAll(async () => {
  await admin?.end();
  await t?.stop();
});

test('connections terminated mid-batch: callers get UNAVAILABLE, nothing half-applied, the node carries on', async () => {
  const payer = t.participant('FLTADEFFXXX');
  const settled: bigint[] = [];
  const codes = new Map<number, number>();
  let killing = true;
  let killed = 0;
  const killer = (async () => {
    while (killing) {
      const { rows } = await admin.query(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'clearing-node' AND pid <> pg_backend_pid() AND state <> 'idle'`,
      );
      killed += rows[0].n as number;
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
  })();
  await Promise.all(
    Array.from({ length: 8 }, async (_, loop) => {
      for (let i = 0; i < 40; i++) {
        const amount = BigInt(loop * 100 + i + 1);
        try {
          const { result } = await payer.submitTransfer({ transfer: transfer('FLTADEFFXXX', 'FLTBFRPPXXX', amount), waitForFinal: false });
          if (result?.status === TransferStatus.TRANSFER_STATUS_SETTLED) settled.push(amount);
        } catch (error) {
          const code = (error as ServiceError).code;
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
      }
    }),
  );
  killing = false;
  await killer;
  expect(killed).toBeGreaterThan(0);
  // Only UNAVAILABLE may reach a client.
  expect([...codes.keys()].filter((code) => code !== status.UNAVAILABLE)).toEqual([]);

  // The node is still up and settles again.
  const after = await payer.submitTransfer({ transfer: transfer('FLTADEFFXXX', 'FLTBFRPPXXX', 1n), waitForFinal: false });
  expect(after.result?.status).toBe(TransferStatus.TRANSFER_STATUS_SETTLED);
  settled.push(1n);

  // What clients saw settled is exactly what moved; nothing else did.
  const total = settled.reduce((sum, x) => sum + x, 0n);
  const { positions } = await t.operator.listPositions({ bic: 'FLTBFRPPXXX', currency: 'EUR', pageSize: 0, pageToken: '' });
  const { rows } = await admin.query(`SELECT count(*)::int AS n FROM transfers WHERE status = 'SETTLED'`);
  // A batch whose COMMIT went through but whose answer was lost shows up as
  // settled without a client having seen it; the client's retry would replay it.
  expect(rows[0].n).toBeGreaterThanOrEqual(settled.length);
  expect(positions[0]?.balanceMinor).toBeGreaterThanOrEqual(1_000_000n + total);
  expect((await t.operator.reconcile({})).clean).toBe(true);
}, 60_000);
