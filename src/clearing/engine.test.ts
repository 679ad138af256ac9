// The engine answers only after COMMIT, and a committed batch stays committed
// and answered whatever happens when it is handed to the streams afterwards.
import { createHash } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { SettlementEngine } from './engine.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
                       VALUES ('ENGNDEFFXXX', 'Engine test bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}')`);
  await db.pool.query(`INSERT INTO positions (bic, currency) VALUES ('ENGNDEFFXXX', 'EUR')`);
});
afterAll(async () => {
  await db?.drop();
});

describe('SettlementEngine', () => {
  test('a failure after COMMIT (handing the batch to the streams) neither retries nor fails the batch', async () => {
    const errors: unknown[] = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => void errors.push(JSON.parse(line)) });
    let handed = 0;
    const engine = new SettlementEngine(
      db.pool,
      { nodeId: 'engine-test', notificationSource: 'engine-test' },
      {
        queueOperationsMax: 100,
        batchOperationsMax: 10,
        batchWaitMs: 0,
        batchRetryMax: 3,
        settlementPipelines: 1,
        transferAmountMaxMinor: 1_000_000n,
        reservationTimeoutMs: 10_000,
      },
      logger,
      () => {
        handed += 1;
        throw new Error('streams are broken');
      },
    );
    engine.start();
    try {
      const [outcome] = await engine.submit(
        [{ kind: 'FUND', requestId: 'engine-fund-1', bic: 'ENGNDEFFXXX', currency: 'EUR', amountMinor: 500n, digest: createHash('sha256').update('fund').digest() }],
        { cancelled: () => false, deadlineMs: Infinity },
      );
      expect(outcome).toMatchObject({ kind: 'position', replayed: false, position: { balanceMinor: 500n } });
      expect(handed).toBe(1); // once: no retry of a committed batch
      const stored = await db.pool.query(`SELECT balance_minor::text AS balance FROM positions WHERE bic = 'ENGNDEFFXXX'`);
      expect(stored.rows[0].balance).toBe('500');
      expect(errors).toHaveLength(1);
    } finally {
      await engine.stop();
    }
  });
});
