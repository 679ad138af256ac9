// The engine answers only after COMMIT, and a committed batch stays committed
// and answered whatever happens when it is handed to the streams afterwards.
import { createHash } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { createPool } from '../store/database.js';
import { positionOperation as positionOperationOf, transferOperation } from '../../test/support/operations.js';
import { nextBatchWaitMaxMsDefault, noObserver, SettlementEngine, type EngineLimits, type EngineObserver } from './engine.js';
import type { Operation, OperationOutcome } from './batch.js';

let db: TestDatabase;
/** A pool as the node makes it (pipelined queries, its timeouts), for the engines. */
let pool: pg.Pool;
beforeAll(async () => {
  db = await createTestDatabase();
  // afterAll drops the database WITH (FORCE), which may end connections pool.end() is still closing.
  pool = createPool(db.url, 10, () => {});
  await db.pool.query(`INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
                       VALUES ('ENGNDEFFXXX', 'Engine test bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}')`);
  await db.pool.query(`INSERT INTO positions (bic, currency) VALUES ('ENGNDEFFXXX', 'EUR')`);
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** The engines' limits in these tests: one pipeline, nothing decided ahead, unless `changes` says otherwise. */
function limitsWith(changes: Partial<EngineLimits>): EngineLimits {
  return {
    queueOperationsMax: 1_000,
    batchOperationsMax: 10,
    batchWaitMs: 0,
    batchRetryMax: 3,
    settlementPipelines: 1,
    decideAheadOperationsMin: 0,
    decideAheadCooldownMs: 1_000,
    nextBatchWaitMaxMs: nextBatchWaitMaxMsDefault,
    transferAmountMaxMinor: 1_000_000n,
    reservationTimeoutMs: 10_000,
    ...changes,
  };
}

describe('SettlementEngine', () => {
  test('a failure after COMMIT (handing the batch to the streams) neither retries nor fails the batch', async () => {
    const errors: unknown[] = [];
    const logger = pino({ level: 'error' }, { write: (line: string) => void errors.push(JSON.parse(line)) });
    let handed = 0;
    const engine = new SettlementEngine(
      pool,
      { nodeId: 'engine-test', notificationSource: 'engine-test' },
      limitsWith({ queueOperationsMax: 100 }),
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

// --- taking the next batch ---------------------------------------------------

describe('when a pipeline takes the next batch', () => {
  /** Two pipelines; batches decided ahead from `decideAheadOperationsMin` operations. */
  function twoPipelines(name: string, decideAheadOperationsMin: number, started: number[], committed: number[], nextBatchWaitMaxMs = 60_000): SettlementEngine {
    return new SettlementEngine(
      pool,
      { nodeId: name, notificationSource: name },
      limitsWith({ batchOperationsMax: 100, settlementPipelines: 2, decideAheadOperationsMin, nextBatchWaitMaxMs }),
      pino({ level: 'silent' }),
      () => {},
      {
        ...noObserver,
        batch: (observed) => {
          started.push(observed.length);
          return { run: (transaction) => transaction(), committed: (batch) => void committed.push(batch.operations.length), failed: () => {} };
        },
      },
    );
  }

  let banksMade = 0;
  async function freshBank(): Promise<string> {
    banksMade += 1;
    const bic = `TK${String.fromCharCode(65 + Math.floor(banksMade / 26), 65 + (banksMade % 26))}DEFFXXX`;
    await db.pool.query(
      `INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
       VALUES ($1, 'Take test bank', 'BANK', 'ACTIVE', 'AUTOMATIC', '{EUR}')`,
      [bic],
    );
    await db.pool.query(`INSERT INTO positions (bic, currency) VALUES ($1, 'EUR')`, [bic]);
    return bic;
  }

  const call = { cancelled: () => false, deadlineMs: Infinity };
  const fund = (bic: string) => positionOperationOf('take', 'FUND', bic, 1n);
  const tick = () => new Promise((resolve) => setTimeout(resolve, 20));

  /** Holds `bic`'s row as another node's transaction would, until the returned function commits. */
  async function holdRow(bic: string): Promise<() => Promise<void>> {
    const holder = await db.pool.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM participants WHERE bic = $1 FOR UPDATE', [bic]);
    let held = true;
    return async () => {
      if (!held) return;
      held = false;
      await holder.query('COMMIT');
      holder.release();
    };
  }

  interface Scenario {
    engine: SettlementEngine;
    /** Operations per batch, as each batch starts and as it commits. */
    started: number[];
    committed: number[];
    /** A fresh bank whose row someone else holds until `release`. */
    bank: string;
    release: () => Promise<void>;
  }

  /** Two pipelines and a bank whose row another transaction holds: batches on it wait in Postgres. */
  async function withHeldBank(
    name: string,
    limits: { decideAheadOperationsMin?: number; nextBatchWaitMaxMs?: number },
    body: (scenario: Scenario) => Promise<void>,
  ): Promise<void> {
    const started: number[] = [];
    const committed: number[] = [];
    const engine = twoPipelines(name, limits.decideAheadOperationsMin ?? 0, started, committed, limits.nextBatchWaitMaxMs);
    engine.start();
    const bank = await freshBank();
    const release = await holdRow(bank);
    try {
      await body({ engine, started, committed, bank, release });
    } finally {
      await release();
      await engine.stop();
    }
  }

  const kinds = (outcomes: OperationOutcome[]) => outcomes.map((o) => o.kind);

  test('not while a batch in flight shares its participants: what arrives meanwhile settles as one batch', () =>
    withHeldBank('take-shared', {}, async ({ engine, started, committed, bank, release }) => {
      const first = engine.submit([fund(bank)], call);
      await tick();
      const later = [engine.submit([fund(bank)], call), engine.submit([fund(bank)], call), engine.submit([fund(bank)], call)];
      await tick();
      // The second pipeline did not take them: they would only wait for the first batch's locks.
      expect(started).toEqual([1]);
      await release();
      expect(kinds([await first, ...(await Promise.all(later))].flat())).toEqual(['position', 'position', 'position', 'position']);
      expect(committed).toEqual([1, 3]);
    }));

  test("at once when its participants are free: another bank's stuck batch does not hold it up", () =>
    withHeldBank('take-free', {}, async ({ engine, committed, bank, release }) => {
      const freeBank = await freshBank();
      const stuck = engine.submit([fund(bank)], call);
      await tick();
      // Settled while the other batch waits for its lock (lock_timeout 2 s).
      expect(kinds(await engine.submit([fund(freeBank)], call))).toEqual(['position']);
      expect(committed).toEqual([1]);
      await release();
      expect(kinds(await stuck)).toEqual(['position']);
    }));

  test('anyway once it waited nextBatchWaitMaxMs: a batch stuck on a lock does not hold every other batch back', () =>
    withHeldBank('take-capped', { nextBatchWaitMaxMs: 30 }, async ({ engine, started, committed, bank, release }) => {
      const first = engine.submit([fund(bank)], call);
      await tick();
      const second = engine.submit([fund(bank)], call);
      // Taken after the wait, while the first is still stuck (its lock_timeout is 2 s).
      const deadline = Date.now() + 1_000;
      while (started.length < 2 && Date.now() < deadline) await tick();
      expect(started).toEqual([1, 1]);
      expect(committed).toEqual([]);
      await release();
      expect(kinds([...(await first), ...(await second)])).toEqual(['position', 'position']);
    }));

  test('at once when enough is queued to decide a batch ahead', () =>
    withHeldBank('take-bulk', { decideAheadOperationsMin: 3 }, async ({ engine, started, bank, release }) => {
      const first = engine.submit([fund(bank)], call);
      await tick();
      const bulk = engine.submit([fund(bank), fund(bank), fund(bank)], call);
      await tick();
      // Taken while the first waits: deciding ahead pays off where batches are large.
      expect(started).toEqual([1, 3]);
      await release();
      expect(kinds([...(await first), ...(await bulk)])).toEqual(['position', 'position', 'position', 'position']);
    }));
});

// --- deciding ahead ----------------------------------------------------------

type Attempt = 'expected' | 'locked' | 'failed';

/** Records every attempt of every batch: committed on which path, or failed. */
function recordingObserver(attempts: Attempt[]): EngineObserver {
  return {
    ...noObserver,
    batch: () => ({
      run: (transaction) => transaction(),
      committed: (batch) => void attempts.push(batch.path),
      failed: () => void attempts.push('failed'),
    }),
  };
}

function aheadEngine(name: string, observer: EngineObserver, settlementPipelines = 1, decideAheadCooldownMs = 1_000): SettlementEngine {
  return new SettlementEngine(
    pool,
    { nodeId: name, notificationSource: name },
    // Every batch of transfers is decided ahead when this engine knows its rows.
    limitsWith({ settlementPipelines, decideAheadOperationsMin: 1, decideAheadCooldownMs }),
    pino({ level: 'silent' }),
    () => {},
    observer,
  );
}

const call = { cancelled: () => false, deadlineMs: Infinity };
const transferOf = (debtorAgent: string, creditorAgent: string, amountMinor: bigint, intermediaryAgent = ''): Operation =>
  transferOperation('ahead', { debtorAgent, creditorAgent, intermediaryAgent }, amountMinor);
const positionOperation = (kind: 'FUND' | 'DEFUND' | 'SET_DEBIT_CAP', bic: string, amountMinor: bigint): Operation =>
  positionOperationOf('ahead', kind, bic, amountMinor);

async function positionOf(bic: string): Promise<{ balance: bigint; reserved: bigint }> {
  const { rows } = await db.pool.query(
    `SELECT balance_minor::text AS balance, reserved_minor::text AS reserved FROM positions WHERE bic = $1 AND currency = 'EUR'`,
    [bic],
  );
  return { balance: BigInt(rows[0].balance), reserved: BigInt(rows[0].reserved) };
}

/** A transfer's status and reason code; an error's reason; else the kind of outcome. */
const outcomeOf = (o: OperationOutcome | undefined) =>
  o?.kind === 'transfer' ? `${o.transfer.status} ${o.transfer.reasonCode}`.trim() : o?.kind === 'error' ? o.error.reason : String(o?.kind);

interface Banks {
  debtor: string;
  creditor: string;
  /** A GATEWAY participant, named as intermediary agent. */
  gateway: string;
}

let banksMade = 0;
async function addParticipant(bic: string, kind: 'BANK' | 'GATEWAY', acceptanceMode: 'AUTOMATIC' | 'EXPLICIT'): Promise<void> {
  await db.pool.query(
    `INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
     VALUES ($1, 'Ahead test participant', $2, 'ACTIVE', $3, '{EUR}')`,
    [bic, kind, acceptanceMode],
  );
  await db.pool.query(`INSERT INTO positions (bic, currency) VALUES ($1, 'EUR')`, [bic]);
}

/**
 * Fresh banks and a gateway; the debtor funded with 1,000 and given a debit
 * cap of 1,000; then one transfer of 100 through the gateway: `engine` has
 * read every one of their rows under its locks and knows them.
 */
async function banksKnownTo(engine: SettlementEngine, attempts: Attempt[]): Promise<Banks> {
  banksMade += 1;
  const tag = String.fromCharCode(65 + Math.floor(banksMade / 26), 65 + (banksMade % 26));
  const banks = { debtor: `AD${tag}DEFFXXX`, creditor: `AC${tag}DEFFXXX`, gateway: `AG${tag}DEFFXXX` };
  await addParticipant(banks.debtor, 'BANK', 'AUTOMATIC');
  await addParticipant(banks.creditor, 'BANK', 'AUTOMATIC');
  await addParticipant(banks.gateway, 'GATEWAY', 'AUTOMATIC');
  await engine.submit([positionOperation('FUND', banks.debtor, 1_000n)], call);
  await engine.submit([positionOperation('SET_DEBIT_CAP', banks.debtor, 1_000n)], call);
  const [first] = await engine.submit([transferOf(banks.debtor, banks.creditor, 100n, banks.gateway)], call);
  expect(outcomeOf(first)).toBe('SETTLED');
  expect(attempts.splice(0)).toEqual(['locked', 'locked', 'locked']); // nothing known yet: read under the locks
  return banks;
}

describe('a batch decided ahead of its locks', () => {
  test('once the node knows the rows, a batch of transfers is decided ahead and settles in arrival order', async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-a', recordingObserver(attempts));
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      // 900 + a cap of 1,000 available: the first two fit, the third (after them) does not.
      const outcomes = await engine.submit(
        [transferOf(debtor, creditor, 800n), transferOf(debtor, creditor, 800n), transferOf(debtor, creditor, 800n)],
        call,
      );
      expect(outcomes.map(outcomeOf)).toEqual(['SETTLED', 'SETTLED', 'REJECTED AM04']);
      expect(attempts).toEqual(['expected']);
      expect(await positionOf(debtor)).toEqual({ balance: -700n, reserved: 0n });
      expect((await positionOf(creditor)).balance).toBe(1_700n);
      // The sequences it expected are the ones stored: the next batch is decided ahead too.
      await engine.submit([transferOf(creditor, debtor, 50n)], call);
      expect(attempts).toEqual(['expected', 'expected']);
      expect((await positionOf(debtor)).balance).toBe(-650n);
    } finally {
      await engine.stop();
    }
  });

  test('batches of three pipelines are decided ahead one after another, none refused', async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-pipelines', recordingObserver(attempts), 3);
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      // Submitted together: up to three batches in flight at once, on the same two positions.
      const calls = Array.from({ length: 60 }, (_, i) =>
        engine.submit([i % 2 === 0 ? transferOf(debtor, creditor, 10n) : transferOf(creditor, debtor, 3n)], call),
      );
      const outcomes = (await Promise.all(calls)).flat();
      expect(new Set(outcomes.map(outcomeOf))).toEqual(new Set(['SETTLED']));
      // Each batch decided on what the one before it left, and took its locks after it.
      expect(attempts.length).toBeGreaterThan(2);
      expect(new Set(attempts)).toEqual(new Set(['expected']));
      expect((await positionOf(debtor)).balance).toBe(900n - 30n * 10n + 30n * 3n);
      expect((await positionOf(creditor)).balance).toBe(100n + 30n * 10n - 30n * 3n);
    } finally {
      await engine.stop();
    }
  });

  test('a batch read under its locks started after one decided ahead waits for that one\'s locks instead of overtaking it', async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-order', recordingObserver(attempts), 2);
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      for (let round = 0; round < 5; round++) {
        const transfer = engine.submit([transferOf(debtor, creditor, 10n)], call);
        // Taken by the first pipeline before the liquidity transfer is queued for the second.
        await new Promise((resolve) => setImmediate(resolve));
        // Liquidity transfers are always read under the locks. Decided ahead, the
        // transfer may first fetch batch ids (a round trip): had the liquidity
        // transfer not waited for it, it would reach the locks first and make it wrong.
        const fund = engine.submit([positionOperation('FUND', debtor, 1n)], call);
        expect((await Promise.all([transfer, fund])).flat().map(outcomeOf)).toEqual(['SETTLED', 'position']);
      }
      // None refused (the order their commits are seen in may vary).
      expect([...attempts].sort()).toEqual([...Array(5).fill('expected'), ...Array(5).fill('locked')]);
      expect((await positionOf(debtor)).balance).toBe(900n - 50n + 5n);
    } finally {
      await engine.stop();
    }
  });

  test('a batch decided ahead started after one read under its locks decides on what that one left', async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-order-2', recordingObserver(attempts), 2);
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      for (let round = 0; round < 5; round++) {
        const fund = engine.submit([positionOperation('FUND', debtor, 1n)], call);
        await new Promise((resolve) => setImmediate(resolve));
        // Had it not waited for the liquidity transfer's decision, it would decide
        // on the balance before it, and Postgres would refuse it.
        const transfer = engine.submit([transferOf(debtor, creditor, 10n)], call);
        expect((await Promise.all([fund, transfer])).flat().map(outcomeOf)).toEqual(['position', 'SETTLED']);
      }
      // None refused (the order their commits are seen in may vary).
      expect([...attempts].sort()).toEqual([...Array(5).fill('expected'), ...Array(5).fill('locked')]);
      expect((await positionOf(debtor)).balance).toBe(900n + 5n - 50n);
    } finally {
      await engine.stop();
    }
  });

  test("a batch waits only for earlier batches on its own participants: another bank's stuck lock does not hold it up", async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-unrelated', recordingObserver(attempts), 2);
    engine.start();
    const holder = await db.pool.connect();
    try {
      const { debtor, creditor, gateway } = await banksKnownTo(engine, attempts);
      // Someone else (another node, an operator's transaction) holds the gateway's row.
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM participants WHERE bic = $1 FOR UPDATE', [gateway]);
      const stuck = engine.submit([positionOperation('FUND', gateway, 1n)], call);
      await new Promise((resolve) => setImmediate(resolve));
      // Decided ahead on the debtor and the creditor while that batch waits for the gateway's lock.
      const [result] = await engine.submit([transferOf(debtor, creditor, 10n)], call);
      expect(outcomeOf(result)).toBe('SETTLED');
      // Settled while the other batch still waited (its lock_timeout is 2 s): nothing else committed or failed yet.
      expect(attempts).toEqual(['expected']);
      await holder.query('COMMIT');
      expect(outcomeOf((await stuck)[0])).toBe('position');
      expect(attempts).toEqual(['expected', 'locked']);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      holder.release();
      await engine.stop();
    }
  });

  // What this node expects is never trusted: each row that changed underneath
  // it makes Postgres refuse the batch, which is then decided under its locks.
  // One case per field a decision reads; each fails if settlement_expect
  // leaves that field out.
  test.each([
    {
      change: "another node takes liquidity out of the debtor's position (balance)",
      apply: async ({ other, banks }: Change) => {
        await other.submit([positionOperation('DEFUND', banks.debtor, 850n)], call);
      },
      amountMinor: 1_500n,
      outcome: 'REJECTED AM04',
      debtor: { balance: 50n, reserved: 0n },
    },
    {
      change: "another node lowers the debtor's debit cap",
      apply: async ({ other, banks }: Change) => {
        await other.submit([positionOperation('SET_DEBIT_CAP', banks.debtor, 0n)], call);
      },
      amountMinor: 1_500n,
      outcome: 'REJECTED AM04',
      debtor: { balance: 900n, reserved: 0n },
    },
    {
      change: 'another node reserves on the debtor for an EXPLICIT creditor (reserved)',
      apply: async ({ other, banks }: Change) => {
        const explicit = banks.creditor.replace(/^AC/, 'AX');
        await addParticipant(explicit, 'BANK', 'EXPLICIT');
        const [reserved] = await other.submit([transferOf(banks.debtor, explicit, 1_000n)], call);
        expect(outcomeOf(reserved)).toBe('RESERVED');
      },
      amountMinor: 1_500n,
      outcome: 'REJECTED AM04',
      debtor: { balance: 900n, reserved: 1_000n },
    },
    {
      change: 'another node settles a transfer from the creditor to the debtor (balances and confirmation sequences)',
      apply: async ({ other, banks }: Change) => {
        await other.submit([positionOperation('FUND', banks.creditor, 10n)], call);
        await other.submit([transferOf(banks.creditor, banks.debtor, 10n)], call);
      },
      amountMinor: 100n,
      outcome: 'SETTLED',
      debtor: { balance: 810n, reserved: 0n },
    },
    {
      change: 'an operator suspends the creditor (status)',
      apply: operatorSets('status', 'SUSPENDED', 'creditor'),
      amountMinor: 100n,
      outcome: 'REJECTED AG01',
      debtor: { balance: 900n, reserved: 0n },
    },
    {
      change: 'an operator switches the creditor to explicit acceptance (acceptance mode)',
      apply: operatorSets('acceptance_mode', 'EXPLICIT', 'creditor'),
      amountMinor: 100n,
      outcome: 'RESERVED',
      debtor: { balance: 900n, reserved: 100n },
    },
    {
      change: 'an operator suspends the gateway named as intermediary agent (its status)',
      apply: operatorSets('status', 'SUSPENDED', 'gateway'),
      amountMinor: 100n,
      outcome: 'REJECTED AG01',
      debtor: { balance: 900n, reserved: 0n },
    },
    {
      change: 'an operator turns the gateway into a bank (kind)',
      apply: operatorSets('kind', 'BANK', 'gateway'),
      amountMinor: 100n,
      outcome: 'REJECTED RC01',
      debtor: { balance: 900n, reserved: 0n },
    },
  ])('$change: the batch is refused and decided again under its locks', async ({ apply, amountMinor, outcome, debtor }) => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-b', recordingObserver(attempts));
    const other = aheadEngine('ahead-other', noObserver);
    engine.start();
    other.start();
    try {
      const banks = await banksKnownTo(engine, attempts);
      await apply({ other, banks });
      // By what this node knows (balance 900, cap 1,000, nothing reserved, every
      // party active and as it was) the transfer settles.
      const [result] = await engine.submit([transferOf(banks.debtor, banks.creditor, amountMinor, banks.gateway)], call);
      expect(outcomeOf(result)).toBe(outcome);
      expect(attempts).toEqual(['failed', 'locked']);
      expect(await positionOf(banks.debtor)).toEqual(debtor);
      // After a refusal the node reads under the locks for a while (the cooldown).
      await engine.submit([transferOf(banks.debtor, banks.creditor, 1n, banks.gateway)], call);
      expect(attempts).toEqual(['failed', 'locked', 'locked']);
    } finally {
      await Promise.all([engine.stop(), other.stop()]);
    }
  });

  // The inbound sequence orders an EXPLICIT creditor's stream of transfers
  // waiting for its answer: a batch expecting an old one would hand out a
  // number already taken (nothing else in the database stops that).
  test("another node's reservation for the same EXPLICIT creditor (its inbound sequence): refused, and sequences stay unique", async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-d', recordingObserver(attempts), 1, 0);
    const other = aheadEngine('ahead-other-d', noObserver);
    engine.start();
    other.start();
    try {
      const banks = await banksKnownTo(engine, attempts);
      await db.pool.query(`UPDATE participants SET acceptance_mode = 'EXPLICIT' WHERE bic = $1`, [banks.creditor]);
      const [mine] = await engine.submit([transferOf(banks.debtor, banks.creditor, 10n)], call);
      expect(outcomeOf(mine)).toBe('RESERVED');
      expect(attempts.splice(0)).toEqual(['failed', 'locked']); // the mode changed underneath
      // Another node's reservation for the same creditor, from another debtor.
      const otherDebtor = banks.debtor.replace(/^AD/, 'AO');
      await addParticipant(otherDebtor, 'BANK', 'AUTOMATIC');
      await other.submit([positionOperation('FUND', otherDebtor, 100n)], call);
      const [theirs] = await other.submit([transferOf(otherDebtor, banks.creditor, 10n)], call);
      expect(outcomeOf(theirs)).toBe('RESERVED');
      // Only the creditor's inbound sequence differs from what this node expects.
      const [next] = await engine.submit([transferOf(banks.debtor, banks.creditor, 10n)], call);
      expect(outcomeOf(next)).toBe('RESERVED');
      expect(attempts).toEqual(['failed', 'locked']);
      const { rows } = await db.pool.query(
        `SELECT creditor_sequence::text AS sequence FROM transfers WHERE creditor_agent = $1 AND status = 'RESERVED' ORDER BY creditor_sequence`,
        [banks.creditor],
      );
      expect(rows.map((r) => r.sequence)).toEqual(['1', '2', '3']);
    } finally {
      await Promise.all([engine.stop(), other.stop()]);
    }
  });

  test('a batch of new transfers decided ahead assumes none is stored; a replay fails its write and is answered under the locks', async () => {
    const attempts: string[] = [];
    const engine = aheadEngine('ahead-c', {
      ...noObserver,
      batch: () => ({
        run: (transaction) => transaction(),
        committed: (batch) => void attempts.push(`${batch.path}${batch.path === 'expected' && batch.storedRead ? ' read' : ''}`),
        failed: (error) => void attempts.push(`failed ${(error as { code?: string }).code}`),
      }),
    });
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts as Attempt[]);
      const first = transferOf(debtor, creditor, 5n);
      // The same instruction twice in one batch: the second is a replay of the first, seen without a read.
      const outcomes = await engine.submit([first, first], call);
      expect(outcomes.map((o) => (o.kind === 'transfer' ? o.replayed : o.kind))).toEqual([false, true]);
      expect(attempts.splice(0)).toEqual(['expected']);
      // Stored now: assumed absent, the write fails on the primary key, and the
      // batch is decided again under the locks, which read it: a replay.
      const [again] = await engine.submit([first], call);
      expect(again).toMatchObject({ kind: 'transfer', replayed: true, transfer: { status: 'SETTLED' } });
      expect(attempts.splice(0)).toEqual(['failed 23505', 'locked']);
      // For the cooldown after that, batches decided ahead read what is stored first.
      const [next] = await engine.submit([transferOf(debtor, creditor, 5n)], call);
      expect(outcomeOf(next)).toBe('SETTLED');
      expect(attempts.splice(0)).toEqual(['expected read']);
      expect(await positionOf(debtor)).toEqual({ balance: 1_000n - 100n - 5n - 5n, reserved: 0n });
    } finally {
      await engine.stop();
    }
  });

  test('a replay that fails its write leaves deciding ahead on: a taken id is no sign of another writer', async () => {
    const attempts: string[] = [];
    const engine = aheadEngine(
      'ahead-k',
      {
        ...noObserver,
        batch: () => ({
          run: (transaction) => transaction(),
          committed: (batch) => void attempts.push(batch.path),
          failed: (error) => void attempts.push(`failed ${(error as { code?: string }).code}`),
        }),
      },
      2,
    );
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts as Attempt[]);
      const stored = transferOf(debtor, creditor, 5n);
      expect(outcomeOf((await engine.submit([stored], call))[0])).toBe('SETTLED');
      attempts.splice(0);
      // A replay (assumed new: its write fails on the primary key) and, in the
      // other pipeline, a new transfer on the same banks, taken right behind it
      // (here it finds the expectation already forgotten and reads under the
      // locks; decided on the failing batch, it would be refused, and
      // ExpectedState.generation keeps that refusal from starting a cooldown).
      const replaying = engine.submit([stored], call);
      await new Promise((resolve) => setImmediate(resolve)); // taken by the first pipeline alone
      const [[replay], [next]] = await Promise.all([replaying, engine.submit([transferOf(debtor, creditor, 6n)], call)]);
      expect(replay).toMatchObject({ kind: 'transfer', replayed: true });
      expect(outcomeOf(next)).toBe('SETTLED');
      expect(attempts).toContain('failed 23505');
      // No cooldown: deciding ahead goes on at once.
      attempts.splice(0);
      expect(outcomeOf((await engine.submit([transferOf(debtor, creditor, 7n)], call))[0])).toBe('SETTLED');
      expect(attempts).toEqual(['expected']);
      expect(await positionOf(debtor)).toEqual({ balance: 1_000n - 100n - 5n - 6n - 7n, reserved: 0n });
    } finally {
      await engine.stop();
    }
  });

  test('a reused UETR assumed absent fails the write and is rejected DUPL under the locks', async () => {
    const attempts: Attempt[] = [];
    const engine = aheadEngine('ahead-u', recordingObserver(attempts), 1, 0);
    engine.start();
    try {
      const { debtor, creditor } = await banksKnownTo(engine, attempts);
      const original = transferOf(debtor, creditor, 7n);
      expect(outcomeOf((await engine.submit([original], call))[0])).toBe('SETTLED');
      const reuse = transferOf(debtor, creditor, 9n);
      if (reuse.kind !== 'transfer' || original.kind !== 'transfer') throw new Error('transfers expected');
      reuse.transfer.uetr = original.transfer.uetr;
      const [rejected] = await engine.submit([reuse], call);
      expect(outcomeOf(rejected)).toBe('REJECTED DUPL');
      expect(attempts).toEqual(['expected', 'failed', 'locked']);
      // Nothing of the refused write stayed: the debtor paid the original only.
      expect(await positionOf(debtor)).toEqual({ balance: 1_000n - 100n - 7n, reserved: 0n });
    } finally {
      await engine.stop();
    }
  });
});

interface Change {
  other: SettlementEngine;
  banks: Banks;
}

/** An operator's change of one participant column, straight in the database. */
function operatorSets(column: 'status' | 'acceptance_mode' | 'kind', value: string, who: keyof Banks) {
  return async ({ banks }: Change) => {
    await db.pool.query(`UPDATE participants SET ${column} = $2 WHERE bic = $1`, [banks[who], value]);
  };
}
