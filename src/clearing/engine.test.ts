// The engine answers only after COMMIT, and a committed batch stays committed
// and answered whatever happens when it is handed to the streams afterwards.
import { createHash, randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { noObserver, SettlementEngine, type EngineObserver } from './engine.js';
import type { Operation } from './batch.js';

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
        decideAheadOperationsMin: 0,
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

// --- deciding ahead ----------------------------------------------------------

type Path = 'expected' | 'locked';

/** Records every attempt of every batch: committed on which path, or failed. */
function recordingObserver(attempts: (Path | 'failed')[]): EngineObserver {
  return {
    ...noObserver,
    batch: () => ({
      run: (transaction) => transaction(),
      committed: (batch) => void attempts.push(batch.path),
      failed: () => void attempts.push('failed'),
    }),
  };
}

function aheadEngine(name: string, observer: EngineObserver): SettlementEngine {
  return new SettlementEngine(
    db.pool,
    { nodeId: name, notificationSource: name },
    {
      queueOperationsMax: 100,
      batchOperationsMax: 10,
      batchWaitMs: 0,
      batchRetryMax: 3,
      settlementPipelines: 1,
      // Every batch of transfers is decided ahead when this engine knows its rows.
      decideAheadOperationsMin: 1,
      transferAmountMaxMinor: 1_000_000n,
      reservationTimeoutMs: 10_000,
    },
    pino({ level: 'silent' }),
    () => {},
    observer,
  );
}

const call = { cancelled: () => false, deadlineMs: Infinity };
const digestOf = (text: string) => createHash('sha256').update(text).digest();
let ids = 0;

function transferOf(debtorAgent: string, creditorAgent: string, amountMinor: bigint): Operation {
  const id = `ahead-${++ids}`;
  return {
    kind: 'transfer',
    transfer: {
      instructionId: id,
      endToEndId: id,
      uetr: randomUUID(),
      debtorAgent,
      creditorAgent,
      intermediaryAgent: '',
      currency: 'EUR',
      amountMinor,
      debtorName: 'Debtor',
      debtorIban: 'DE89370400440532013000',
      creditorName: 'Creditor',
      creditorIban: 'DE89370400440532013001',
      remittanceInformation: '',
    },
    digest: digestOf(id),
    receivedAt: new Date(),
    traceId: '',
  };
}

function positionOperation(kind: 'FUND' | 'DEFUND', bic: string, amountMinor: bigint): Operation {
  const requestId = `ahead-${kind.toLowerCase()}-${++ids}`;
  return { kind, requestId, bic, currency: 'EUR', amountMinor, digest: digestOf(requestId) };
}

async function balanceOf(bic: string): Promise<bigint> {
  const { rows } = await db.pool.query(`SELECT balance_minor::text AS balance FROM positions WHERE bic = $1 AND currency = 'EUR'`, [bic]);
  return BigInt(rows[0].balance);
}

describe('a batch decided ahead of its locks', () => {
  let pair = 0;
  /** Two fresh banks, the debtor funded with 1,000, both known to `engine` (a first batch read them under its locks). */
  async function banksKnownTo(engine: SettlementEngine, attempts: (Path | 'failed')[]): Promise<{ debtor: string; creditor: string }> {
    pair += 1;
    const tag = String.fromCharCode(65 + Math.floor(pair / 26), 65 + (pair % 26));
    const debtor = `AD${tag}DEFFXXX`;
    const creditor = `AC${tag}DEFFXXX`;
    for (const bic of [debtor, creditor]) {
      await db.pool.query(
        `INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
         VALUES ($1, 'Ahead test bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}')`,
        [bic],
      );
      await db.pool.query(`INSERT INTO positions (bic, currency) VALUES ($1, 'EUR')`, [bic]);
    }
    await engine.submit([positionOperation('FUND', debtor, 1_000n)], call);
    const [first] = await engine.submit([transferOf(debtor, creditor, 100n)], call);
    expect(first).toMatchObject({ kind: 'transfer', transfer: { status: 'SETTLED' } });
    expect(attempts.splice(0)).toEqual(['locked', 'locked']); // nothing known yet: read under the locks
    return { debtor, creditor };
  }

  test('once the node knows the rows, a batch of transfers is decided ahead and settles in arrival order', async () => {
    const attempts: (Path | 'failed')[] = [];
    const engine = aheadEngine('ahead-a', recordingObserver(attempts));
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      // 900 left: the first two fit, the third (together with them) does not.
      const outcomes = await engine.submit(
        [transferOf(debtor, creditor, 400n), transferOf(debtor, creditor, 400n), transferOf(debtor, creditor, 400n)],
        call,
      );
      expect(outcomes.map((o) => (o.kind === 'transfer' ? `${o.transfer.status} ${o.transfer.reasonCode}`.trim() : o.kind))).toEqual([
        'SETTLED',
        'SETTLED',
        'REJECTED AM04',
      ]);
      expect(attempts).toEqual(['expected']);
      expect(await balanceOf(debtor)).toBe(100n);
      expect(await balanceOf(creditor)).toBe(900n);
      // The sequences it expected are the ones stored: the next batch is decided ahead too.
      await engine.submit([transferOf(creditor, debtor, 50n)], call);
      expect(attempts).toEqual(['expected', 'expected']);
      expect(await balanceOf(debtor)).toBe(150n);
    } finally {
      await engine.stop();
    }
  });

  // What this node expects is never trusted: each row that changed underneath
  // it makes Postgres refuse the batch, which is then decided under its locks.
  test.each([
    {
      change: "another node takes liquidity out of the debtor's position",
      apply: async (other: SettlementEngine, debtor: string) => {
        await other.submit([positionOperation('DEFUND', debtor, 850n)], call);
      },
      outcome: 'REJECTED AM04',
      debtorBalance: 50n,
    },
    {
      change: 'another node settles a transfer from the creditor to the debtor',
      apply: async (other: SettlementEngine, debtor: string, creditor: string) => {
        await other.submit([positionOperation('FUND', creditor, 10n)], call);
        await other.submit([transferOf(creditor, debtor, 10n)], call);
      },
      outcome: 'SETTLED',
      debtorBalance: 810n,
    },
    {
      change: 'an operator suspends the creditor',
      apply: async (_other: SettlementEngine, _debtor: string, creditor: string) => {
        await db.pool.query(`UPDATE participants SET status = 'SUSPENDED' WHERE bic = $1`, [creditor]);
      },
      outcome: 'REJECTED AG01',
      debtorBalance: 900n,
    },
  ])('$change: the batch is refused and decided again under its locks', async ({ apply, outcome, debtorBalance }) => {
    const attempts: (Path | 'failed')[] = [];
    const engine = aheadEngine('ahead-b', recordingObserver(attempts));
    const other = aheadEngine('ahead-other', noObserver);
    engine.start();
    other.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      await apply(other, debtor, creditor);
      // By what this node knows (900 available, creditor active) the transfer settles.
      const [result] = await engine.submit([transferOf(debtor, creditor, 100n)], call);
      expect(result?.kind === 'transfer' ? `${result.transfer.status} ${result.transfer.reasonCode}`.trim() : result).toBe(outcome);
      expect(attempts).toEqual(['failed', 'locked']);
      expect(await balanceOf(debtor)).toBe(debtorBalance);
      // After a wrong expectation the node reads under the locks for a while.
      await engine.submit([transferOf(debtor, creditor, 1n)], call);
      expect(attempts).toEqual(['failed', 'locked', 'locked']);
    } finally {
      await Promise.all([engine.stop(), other.stop()]);
    }
  });
});
