// A node killed with reservations outstanding: after a restart (another
// process on the same database) they expire — each exactly once — the
// reservations are released, both banks are told, and Reconcile is clean.
import { afterAll, expect, test } from 'vitest';
import { AcceptanceMode } from '../src/gen/clearing/v1/participant.js';
import { TransferStatus } from '../src/gen/clearing/v1/transfer.js';
import { clearingClient, operatorClient } from './support/clients.js';
import { createBank, transfer } from './support/fixtures.js';
import { createBareDatabase, openTestPool } from './support/database.js';
import { startNodeProcess, stopAllNodeProcesses } from './support/process.js';

afterAll(async () => {
  await stopAllNodeProcesses();
});

test('reservations outstanding at a SIGKILL expire after restart, once each', async () => {
  const database = await createBareDatabase();
  const timeouts = { CLEARING_RESERVATION_TIMEOUT_MS: '1500', CLEARING_EXPIRY_SWEEP_INTERVAL_MS: '50' };
  const db = openTestPool(database.url, 1);
  try {
    const a = await startNodeProcess({ databaseUrl: database.url, name: 'node-a', env: timeouts });
    const operatorA = operatorClient(a.address);
    await createBank(operatorA, 'RSTADEFFXXX', 100_000n);
    await createBank(operatorA, 'RSTBFRPPXXX', 0n, { acceptanceMode: AcceptanceMode.ACCEPTANCE_MODE_EXPLICIT });
    const payer = clearingClient(a.address, 'participant/RSTADEFFXXX');
    const requests = Array.from({ length: 25 }, (_, i) => transfer('RSTADEFFXXX', 'RSTBFRPPXXX', BigInt(100 + i)));
    const { results } = await payer.submitTransfers({ transfers: requests, waitForFinal: false });
    expect(results.every((r) => r.status === TransferStatus.TRANSFER_STATUS_RESERVED)).toBe(true);
    const reserved = requests.reduce((sum, r) => sum + (r.amount?.amountMinor ?? 0n), 0n);
    payer.raw.close();
    operatorA.raw.close();

    // Killed at once: nothing of node A runs when the reservations fall due.
    a.kill('SIGKILL');
    await a.exited;
    const stillReserved = await db.query(`SELECT count(*)::int AS n FROM transfers WHERE status = 'RESERVED'`);
    expect(stillReserved.rows[0].n).toBe(25);

    // Two nodes restart together, both sweeping.
    const [b, c] = await Promise.all([
      startNodeProcess({ databaseUrl: database.url, name: 'node-b', env: timeouts }),
      startNodeProcess({ databaseUrl: database.url, name: 'node-c', env: timeouts }),
    ]);
    const operatorB = operatorClient(b.address);
    let statuses: Record<string, number> = {};
    for (let i = 0; i < 100; i++) {
      const { rows } = await db.query(`SELECT status, count(*)::int AS n FROM transfers GROUP BY status`);
      statuses = Object.fromEntries(rows.map((r) => [r.status, r.n]));
      if (statuses.EXPIRED === 25) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(statuses).toEqual({ EXPIRED: 25 });
    const { positions } = await operatorB.listPositions({ bic: 'RSTADEFFXXX', currency: 'EUR', pageSize: 0, pageToken: '' });
    expect(positions[0]).toMatchObject({ balanceMinor: 100_000n, reservedMinor: 0n, availableMinor: 100_000n });
    expect(reserved).toBeGreaterThan(0n);
    // Each expired once: one confirmation per bank per transfer, one EXPIRED batch write each.
    const confirmations = await db.query(
      `SELECT bic, count(*)::int AS n, count(DISTINCT instruction_id)::int AS distinct_transfers FROM confirmations GROUP BY bic ORDER BY bic`,
    );
    expect(confirmations.rows).toEqual([
      { bic: 'RSTADEFFXXX', n: 25, distinct_transfers: 25 },
      { bic: 'RSTBFRPPXXX', n: 25, distinct_transfers: 25 },
    ]);
    expect((await operatorB.reconcile({})).clean).toBe(true);
    operatorB.raw.close();
    await Promise.all([b.stop(), c.stop()]);
  } finally {
    await db.end();
    await database.drop();
  }
}, 90_000);
