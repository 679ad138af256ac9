// Property: any sequence of liquidity operations, debit-cap changes, suspensions,
// single transfers, SubmitTransfers batches, replays and concurrent submissions,
// run against a real node (gRPC + Postgres), leaves the database exactly where an
// in-memory model of the rules (test/support/model.ts) says it should be.
//
// Each run gets three fresh banks (the run number is spelled in letters inside the
// BICs), so runs share one node and one database without seeing each other.
// Sequential calls are checked answer by answer against the model. A concurrent
// group cannot be predicted — the node decides it in whatever order the calls
// arrive — so its answers must match the model in *some* order of the group; the
// model then takes that order. After every run the positions, every stored
// transfer and Reconcile must agree with the model.
//
// Two properties: ordinary amounts on one shared node, and amounts up to 2^63−1 with
// a node (and database) per run, since Reconcile's totals add up every run of a
// database. Two node bugs found this way are kept as regression tests at the end.
//
// Replay a failure: PROPERTY_SEED=<seed> PROPERTY_PATH=<path> npx vitest run test/property.test.ts -t '<test name>'
// (fast-check prints both). PROPERTY_RUNS=<n> changes the number of runs, PROPERTY_NO_SHRINK=1
// reports the first failure unshrunk, PROPERTY_STATS=1 prints how often each answer was seen.
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { errorDetailsOf } from '../src/api/status.js';
import { ParticipantStatus, type Position } from '../src/gen/clearing/v1/participant.js';
import { TransferStatus, type CreditTransfer, type TransferResult } from '../src/gen/clearing/v1/transfer.js';
import { clearingClient, type ClearingClient } from './support/clients.js';
import { participant, transfer as creditTransfer } from './support/fixtures.js';
import {
  availableOf,
  ClearingModel,
  int64Max,
  type BankModel,
  type Instruction,
  type LiquidityKind,
  type LiquidityRequest,
  type Outcome,
} from './support/model.js';
import { startTestNode, type TestNode } from './support/node.js';

// --- limits of the property ------------------------------------------------

/** The node's per-transfer maximum (CLEARING_TRANSFER_AMOUNT_MAX_MINOR): 10,000.00 EUR. */
const transferAmountMaxMinor = 1_000_000n;
const currency = 'EUR';
/** A currency no bank settles: transfers in it are AM03. */
const unsettledCurrency = 'CHF';
const bankCount = 3;
/** Only this bank is given a debit cap; the others stay strictly prefunded. */
const cappedBank = 0;
const runsDefault = 25;
const extremeRunsDefault = 10;
const commandsMax = 25;
const batchTransfersMax = 8;
const concurrentCallsMax = 6;
const propertyTimeoutMs = 240_000;

// --- generated commands -----------------------------------------------------

/**
 * An amount, either absolute (`from: 'zero'`) or relative to the position when
 * the command runs, so that "exactly the available amount", "one more than it"
 * and "up to 2^63−1" are hit on purpose, not by luck:
 * - available: balance + debit cap;
 * - used: how far the balance is below zero (what a debit cap must at least cover);
 * - headroom: how far the position may grow before 2^63−1 (funds: balance + cap; caps: balance).
 */
type Amount = { from: 'zero' | 'available' | 'used' | 'headroom'; deltaMinor: bigint };

interface TransferSpec {
  /** Creditor = (debtor + step) mod 3; step 0 names a BIC that is not a participant (RC01). */
  creditorStep: number;
  currency: string;
  amount: Amount;
  /** Reuse the UETR of an earlier instruction of the run (→ DUPL when it is in use). */
  uetrOf: number | null;
}

type BatchItem = { kind: 'new'; transfer: TransferSpec } | { kind: 'again'; pick: number; alter: boolean };
type ConcurrentItem =
  | { kind: 'transfer'; debtor: number; transfer: TransferSpec }
  | { kind: 'liquidity'; op: 'fund' | 'defund' | 'setDebitCap'; bank: number; amount: Amount };

type Command =
  | { op: 'fund'; bank: number; amount: Amount }
  | { op: 'defund'; bank: number; amount: Amount }
  | { op: 'setDebitCap'; amount: Amount }
  | { op: 'setActive'; bank: number; active: boolean }
  | { op: 'transfer'; debtor: number; transfer: TransferSpec }
  | { op: 'batch'; debtor: number; items: BatchItem[] }
  /** The same instruction again (replay), or the same instruction id with another amount (reuse). */
  | { op: 'again'; pick: number; alter: boolean }
  /** The same liquidity request again, or its request id with another amount. */
  | { op: 'liquidityAgain'; pick: number; alter: boolean }
  | { op: 'concurrent'; items: ConcurrentItem[] };

interface Run {
  initialFundsMinor: bigint[];
  /** The debit cap the capped bank starts with (0 = strictly prefunded). */
  initialDebitCapMinor: bigint;
  commands: Command[];
}

/**
 * The largest ordinary amount generated: 10^12 minor units (10 billion EUR). Runs
 * share one database, and Reconcile's totals are sums over every run; amounts up
 * to this keep those sums far below 2^63−1. Amounts up to 2^63−1 itself are the
 * subject of the second property, which gives every run a database of its own.
 */
const largeMinor = 1_000_000_000_000n;

/** Edge-biased positive amounts: 1, small, near the per-transfer maximum, large, and (extremes) near 2^63−1. */
function absoluteMinor(floorMinor: bigint, extremes: boolean): fc.Arbitrary<bigint> {
  const choices: fc.WeightedArbitrary<bigint>[] = [
    { weight: 2, arbitrary: fc.constantFrom(floorMinor, floorMinor + 1n, 1n) },
    { weight: 3, arbitrary: fc.bigInt({ min: floorMinor, max: 1_000n }) },
    { weight: 3, arbitrary: fc.bigInt({ min: floorMinor, max: 2n * transferAmountMaxMinor }) },
    { weight: 2, arbitrary: fc.constantFrom(transferAmountMaxMinor - 1n, transferAmountMaxMinor, transferAmountMaxMinor + 1n) },
    { weight: 1, arbitrary: fc.bigInt({ min: floorMinor, max: largeMinor }) },
  ];
  if (extremes) choices.push({ weight: 2, arbitrary: fc.constantFrom(int64Max - transferAmountMaxMinor, int64Max - 1n, int64Max) });
  return fc.oneof(...choices);
}

/** Arbitrary runs; `extremes` adds amounts near 2^63−1 and amounts relative to the headroom below it. */
function runsOf(extremes: boolean): fc.Arbitrary<Run> {
  const amountOf = (floorMinor: bigint, relativeTo: Amount['from'][]): fc.Arbitrary<Amount> => {
    const bases = relativeTo.filter((base) => extremes || base !== 'headroom');
    const absolute = absoluteMinor(floorMinor, extremes).map((deltaMinor): Amount => ({ from: 'zero', deltaMinor }));
    if (bases.length === 0) return absolute;
    return fc.oneof(
      { weight: 3, arbitrary: absolute },
      { weight: 2, arbitrary: fc.record({ from: fc.constantFrom(...bases), deltaMinor: fc.bigInt({ min: -2n, max: 2n }) }) },
    );
  };

  const bankIndex = fc.integer({ min: 0, max: bankCount - 1 });
  const pick = fc.nat({ max: 1_000 });

  const transferSpec: fc.Arbitrary<TransferSpec> = fc.record({
    creditorStep: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(1, 2) }, { weight: 1, arbitrary: fc.constant(0) }),
    currency: fc.oneof({ weight: 15, arbitrary: fc.constant(currency) }, { weight: 1, arbitrary: fc.constant(unsettledCurrency) }),
    amount: amountOf(1n, ['available']),
    uetrOf: fc.oneof({ weight: 12, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: pick }),
  });

  const batchItem: fc.Arbitrary<BatchItem> = fc.oneof(
    { weight: 8, arbitrary: fc.record({ kind: fc.constant('new' as const), transfer: transferSpec }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('again' as const), pick, alter: fc.boolean() }) },
  );

  const concurrentItem: fc.Arbitrary<ConcurrentItem> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('transfer' as const), debtor: bankIndex, transfer: transferSpec }) },
    {
      weight: 2,
      arbitrary: fc.oneof(
        fc.record({ kind: fc.constant('liquidity' as const), op: fc.constant('fund' as const), bank: bankIndex, amount: amountOf(1n, ['headroom']) }),
        fc.record({ kind: fc.constant('liquidity' as const), op: fc.constant('defund' as const), bank: bankIndex, amount: amountOf(1n, ['available']) }),
        fc.record({
          kind: fc.constant('liquidity' as const),
          op: fc.constant('setDebitCap' as const),
          bank: fc.constant(cappedBank),
          amount: amountOf(0n, ['used', 'headroom']),
        }),
      ),
    },
  );

  const command: fc.Arbitrary<Command> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ op: fc.constant('fund' as const), bank: bankIndex, amount: amountOf(1n, ['headroom']) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('defund' as const), bank: bankIndex, amount: amountOf(1n, ['available']) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('setDebitCap' as const), amount: amountOf(0n, ['used', 'headroom']) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('setActive' as const), bank: bankIndex, active: fc.boolean() }) },
    { weight: 6, arbitrary: fc.record({ op: fc.constant('transfer' as const), debtor: bankIndex, transfer: transferSpec }) },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('batch' as const),
        debtor: bankIndex,
        items: fc.array(batchItem, { minLength: 1, maxLength: batchTransfersMax }),
      }),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('again' as const), pick, alter: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('liquidityAgain' as const), pick, alter: fc.boolean() }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('concurrent' as const),
        items: fc.array(concurrentItem, { minLength: 2, maxLength: concurrentCallsMax }),
      }),
    },
  );

  return fc.record({
    initialFundsMinor: fc.array(absoluteMinor(1n, extremes), { minLength: bankCount, maxLength: bankCount }),
    initialDebitCapMinor: fc.oneof({ weight: 1, arbitrary: fc.constant(0n) }, { weight: 2, arbitrary: absoluteMinor(0n, extremes) }),
    commands: fc.array(command, { minLength: 1, maxLength: commandsMax }),
  });
}

// --- the node and the runs --------------------------------------------------

const nodeEnvironment = {
  CLEARING_TRANSFER_AMOUNT_MAX_MINOR: transferAmountMaxMinor.toString(),
  // Linger a little so the calls of a concurrent group tend to share a settlement batch.
  CLEARING_BATCH_WAIT_MS: '1',
};

/** Runs started in this file: spelled into the BICs so that no two runs share a bank. */
let runCount = 0;

/** The run number in four letters (AAAA, AAAB, …): BICs allow only letters in their first six characters. */
function runTag(n: number): string {
  return [26 ** 3, 26 ** 2, 26, 1].map((unit) => String.fromCharCode(65 + (Math.floor(n / unit) % 26))).join('');
}

/** Bank `letter` of run `tag`, e.g. AAAB + A → AAABAEFFXXX. */
function bicOf(tag: string, letter: string): string {
  const bic = `${tag}${letter}EFFXXX`;
  if (!/^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$/.test(bic)) throw new Error(`bad test BIC ${bic}`);
  return bic;
}

function contentOf(t: CreditTransfer): string {
  return JSON.stringify(t, (_key, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));
}

function instructionOf(t: CreditTransfer): Instruction {
  return {
    debtorAgent: t.debtorAgent,
    instructionId: t.instructionId,
    uetr: t.uetr,
    creditorAgent: t.creditorAgent,
    currency: t.amount?.currency ?? '',
    amountMinor: t.amount?.amountMinor ?? 0n,
    content: contentOf(t),
  };
}

function transferOutcome(r: TransferResult | undefined): Outcome {
  if (r === undefined) return { kind: 'error', code: 'NO_RESULT', reason: '' };
  const name = TransferStatus[r.status] ?? String(r.status);
  return {
    kind: 'transfer',
    uetr: r.uetr,
    status: name.replace(/^TRANSFER_STATUS_/, '') as 'SETTLED' | 'REJECTED',
    reasonCode: r.reasonCode,
    replayed: r.replayed,
  };
}

function positionOutcomeOf(p: Position | undefined, replayed: boolean): Outcome {
  if (p === undefined) return { kind: 'error', code: 'NO_POSITION', reason: '' };
  return {
    kind: 'position',
    balanceMinor: p.balanceMinor,
    reservedMinor: p.reservedMinor,
    debitCapMinor: p.debitCapMinor,
    availableMinor: p.availableMinor,
    replayed,
  };
}

function errorOutcome(error: unknown): Outcome {
  const e = error as ServiceError;
  if (typeof e?.code !== 'number') throw error;
  return { kind: 'error', code: grpcStatus[e.code] ?? String(e.code), reason: errorDetailsOf(e).errorInfo?.reason ?? '' };
}

/** Runs one call and reduces its answer or its gRPC error to an Outcome. */
async function outcomeOf<R>(call: Promise<R>, reduce: (response: R) => Outcome): Promise<Outcome> {
  try {
    return reduce(await call);
  } catch (error) {
    return errorOutcome(error);
  }
}

const show = (value: unknown) => fc.stringify(value);
const showInstruction = (t: CreditTransfer) => {
  const { content: _, ...shown } = instructionOf(t);
  return show(shown);
};

/** How often each kind of answer was seen, printed at the end with PROPERTY_STATS=1: is every rule exercised? */
const answersSeen = new Map<string, number>();
function tally(o: Outcome, via: string): Outcome {
  const label =
    o.kind === 'transfer'
      ? `${via} transfer ${o.status}${o.reasonCode === '' ? '' : ` ${o.reasonCode}`}${o.replayed ? ' replayed' : ''}`
      : o.kind === 'position'
        ? `${via} position${o.replayed ? ' replayed' : ''}`
        : `${via} ${o.code} ${o.reason}`;
  answersSeen.set(label, (answersSeen.get(label) ?? 0) + 1);
  return o;
}
afterAll(() => {
  if (process.env.PROPERTY_STATS !== '1') return;
  console.log([...answersSeen].sort(([a], [b]) => a.localeCompare(b)).map(([label, n]) => `${String(n).padStart(6)}  ${label}`).join('\n'));
});

/** One run: fresh banks, the commands one by one against node and model, then the final comparison. */
class Runner {
  readonly model = new ClearingModel({ transferAmountMaxMinor, currency });
  readonly bics: string[];
  readonly unknownBic: string;
  private readonly clients = new Map<string, ClearingClient>();
  /** Every transfer instruction sent in this run, stored or not, in order: what `again` picks from. */
  private readonly sentTransfers: CreditTransfer[] = [];
  /** Every liquidity request sent in this run, applied or not. */
  private readonly sentLiquidity: LiquidityRequest[] = [];
  private ids = 0;

  constructor(
    readonly t: TestNode,
    readonly tag: string,
  ) {
    this.bics = Array.from({ length: bankCount }, (_, i) => bicOf(tag, String.fromCharCode(65 + i)));
    this.unknownBic = bicOf(tag, 'Z');
  }

  client(bic: string): ClearingClient {
    let c = this.clients.get(bic);
    if (c === undefined) {
      c = clearingClient(this.t.node.address, `participant/${bic}`);
      this.clients.set(bic, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.raw.close();
  }

  private nextId(prefix: string): string {
    this.ids += 1;
    return `${prefix}-${this.tag}-${this.ids}`;
  }

  private bank(index: number): BankModel {
    return this.model.bank(this.bics[index] as string);
  }

  /** The amount a command names, resolved against the model's position of `bank` now, within [floor, 2^63−1]. */
  private resolve(amount: Amount, bank: BankModel, kind: 'transfer' | 'fund' | 'cap', floorMinor: bigint): bigint {
    const p = bank.position;
    let base = 0n;
    if (amount.from === 'available') base = availableOf(p);
    else if (amount.from === 'used') base = p.balanceMinor < 0n ? -p.balanceMinor : 0n;
    else if (amount.from === 'headroom') base = kind === 'cap' ? int64Max - p.balanceMinor : int64Max - p.balanceMinor - p.debitCapMinor;
    const value = base + amount.deltaMinor;
    if (value < floorMinor) return floorMinor;
    return value > int64Max ? int64Max : value;
  }

  private buildTransfer(debtorIndex: number, spec: TransferSpec): CreditTransfer {
    const debtor = this.bank(debtorIndex);
    const creditor = spec.creditorStep === 0 ? this.unknownBic : (this.bics[(debtorIndex + spec.creditorStep) % bankCount] as string);
    const earlier = spec.uetrOf === null || this.sentTransfers.length === 0 ? undefined : this.sentTransfers[spec.uetrOf % this.sentTransfers.length];
    const request = creditTransfer(debtor.bic, creditor, this.resolve(spec.amount, debtor, 'transfer', 1n), {
      instructionId: this.nextId('i'),
      uetr: earlier?.uetr ?? randomUUID(),
    });
    if (request.amount !== undefined) request.amount.currency = spec.currency;
    return request;
  }

  /** An earlier instruction again: the same content (a replay) or its id with one more minor unit (a reuse). */
  private again(previous: CreditTransfer, alter: boolean): CreditTransfer {
    if (!alter) return previous;
    const amount = previous.amount ?? { currency, amountMinor: 1n };
    const amountMinor = amount.amountMinor < int64Max ? amount.amountMinor + 1n : amount.amountMinor - 1n;
    return { ...previous, uetr: randomUUID(), amount: { ...amount, amountMinor } };
  }

  private liquidityRequest(kind: LiquidityKind, bankIndex: number, amount: Amount): LiquidityRequest {
    const bank = this.bank(bankIndex);
    const amountMinor =
      kind === 'SET_DEBIT_CAP' ? this.resolve(amount, bank, 'cap', 0n) : this.resolve(amount, bank, kind === 'FUND' ? 'fund' : 'transfer', 1n);
    return { requestId: this.nextId('l'), kind, bic: bank.bic, currency, amountMinor };
  }

  private sendLiquidity(r: LiquidityRequest): Promise<Outcome> {
    this.sentLiquidity.push(r);
    const money = { currency: r.currency, amountMinor: r.amountMinor };
    const reduce = (response: { position?: Position | undefined; replayed: boolean }) => positionOutcomeOf(response.position, response.replayed);
    if (r.kind === 'FUND') return outcomeOf(this.t.operator.fundPosition({ requestId: r.requestId, bic: r.bic, amount: money }), reduce);
    if (r.kind === 'DEFUND') return outcomeOf(this.t.operator.defundPosition({ requestId: r.requestId, bic: r.bic, amount: money }), reduce);
    return outcomeOf(this.t.operator.setDebitCap({ requestId: r.requestId, bic: r.bic, debitCap: money }), reduce);
  }

  private sendTransfer(request: CreditTransfer): Promise<Outcome> {
    this.sentTransfers.push(request);
    return outcomeOf(this.client(request.debtorAgent).submitTransfer({ transfer: request, waitForFinal: false }), (r) => transferOutcome(r.result));
  }

  async setUp(initialFundsMinor: bigint[], initialDebitCapMinor: bigint): Promise<void> {
    for (const bic of this.bics) {
      await this.t.operator.createParticipant({ participant: participant(bic) });
      this.model.addBank(bic);
    }
    for (const [i, fundMinor] of initialFundsMinor.entries()) {
      await this.step(`initial fund ${i}`, { op: 'fund', bank: i, amount: { from: 'zero', deltaMinor: fundMinor } });
    }
    await this.step('initial debit cap', { op: 'setDebitCap', amount: { from: 'zero', deltaMinor: initialDebitCapMinor } });
  }

  /** One command: the node's answer(s) must be the model's. */
  async step(label: string, c: Command): Promise<void> {
    switch (c.op) {
      case 'fund':
      case 'defund':
      case 'setDebitCap': {
        const kind: LiquidityKind = c.op === 'fund' ? 'FUND' : c.op === 'defund' ? 'DEFUND' : 'SET_DEBIT_CAP';
        const r = this.liquidityRequest(kind, c.op === 'setDebitCap' ? cappedBank : c.bank, c.amount);
        const observed = await this.sendLiquidity(r);
        expect(tally(observed, 'liquidity'), `${label}: ${show(r)}`).toEqual(this.model.changePosition(r));
        return;
      }
      case 'liquidityAgain': {
        const previous = this.sentLiquidity[c.pick % this.sentLiquidity.length];
        if (previous === undefined) return;
        const r = c.alter ? { ...previous, amountMinor: previous.amountMinor < int64Max ? previous.amountMinor + 1n : 1n } : previous;
        const observed = await this.sendLiquidity(r);
        expect(tally(observed, 'liquidity'), `${label}: ${show(r)}`).toEqual(this.model.changePosition(r));
        return;
      }
      case 'setActive': {
        const bic = this.bics[c.bank] as string;
        const status = c.active ? ParticipantStatus.PARTICIPANT_STATUS_ACTIVE : ParticipantStatus.PARTICIPANT_STATUS_SUSPENDED;
        await this.t.operator.updateParticipant({ participant: participant(bic, { status }), updateMask: ['status'] });
        this.model.setActive(bic, c.active);
        return;
      }
      case 'transfer': {
        const request = this.buildTransfer(c.debtor, c.transfer);
        const observed = await this.sendTransfer(request);
        expect(tally(observed, 'single'), `${label}: ${showInstruction(request)}`).toEqual(this.model.submitTransfer(instructionOf(request)));
        return;
      }
      case 'again': {
        const previous = this.sentTransfers[c.pick % this.sentTransfers.length];
        if (previous === undefined) return;
        const request = this.again(previous, c.alter);
        const observed = await this.sendTransfer(request);
        expect(tally(observed, 'single'), `${label}: ${showInstruction(request)}`).toEqual(this.model.submitTransfer(instructionOf(request)));
        return;
      }
      case 'batch':
        return this.batch(label, c.debtor, c.items);
      case 'concurrent':
        return this.concurrent(label, c.items);
    }
  }

  /**
   * SubmitTransfers: every item is decided in arrival order, seeing the ones
   * before it. An item reusing an instruction id with other content is answered
   * AM05 in place and not stored.
   */
  private async batch(label: string, debtorIndex: number, items: BatchItem[]): Promise<void> {
    const debtor = this.bics[debtorIndex] as string;
    // The model decides each item as it is built, so relative amounts and later
    // items see the effect of the items before them, as the node's batch does.
    const requests: CreditTransfer[] = [];
    const expected: Outcome[] = [];
    for (const item of items) {
      let request: CreditTransfer | undefined;
      if (item.kind === 'new') request = this.buildTransfer(debtorIndex, item.transfer);
      else {
        const own = this.sentTransfers.filter((s) => s.debtorAgent === debtor);
        const previous = own[item.pick % Math.max(own.length, 1)];
        if (previous !== undefined) request = this.again(previous, item.alter);
      }
      if (request === undefined) continue;
      requests.push(request);
      this.sentTransfers.push(request);
      const outcome = this.model.submitTransfer(instructionOf(request));
      expected.push(
        outcome.kind === 'error' && outcome.reason === 'INSTRUCTION_ID_REUSED'
          ? { kind: 'transfer', uetr: request.uetr, status: 'REJECTED', reasonCode: 'AM05', replayed: false }
          : outcome,
      );
    }
    if (requests.length === 0) return;
    let observed: Outcome[];
    try {
      const { results } = await this.client(debtor).submitTransfers({ transfers: requests, waitForFinal: false });
      observed = results.map(transferOutcome);
    } catch (error) {
      observed = [errorOutcome(error)];
    }
    expect(observed.map((o) => tally(o, 'batch')), `${label}: batch of ${debtor}: ${show(requests.map(instructionOf).map(({ content: _, ...i }) => i))}`).toEqual(expected);
  }

  /**
   * Calls in flight together. The node may decide them in any order, so the
   * answers must be those of the model in some order of the group (tried
   * exhaustively: at most 6! orders); the model then continues from that order.
   */
  private async concurrent(label: string, items: ConcurrentItem[]): Promise<void> {
    type Prepared = {
      describe: string;
      send: () => Promise<Outcome>;
      apply: (m: ClearingModel) => Outcome;
      request?: CreditTransfer;
      /** The bank whose position the call may raise; by how much its balance at most, and the cap it may set. */
      creditor: string;
      creditsMinor: bigint;
      capMinor: bigint;
    };
    let prepared: Prepared[] = items.map((item): Prepared => {
      if (item.kind === 'liquidity') {
        const kind: LiquidityKind = item.op === 'fund' ? 'FUND' : item.op === 'defund' ? 'DEFUND' : 'SET_DEBIT_CAP';
        const r = this.liquidityRequest(kind, item.bank, item.amount);
        return {
          describe: show(r),
          send: () => this.sendLiquidity(r),
          apply: (m) => m.changePosition(r),
          creditor: r.bic,
          creditsMinor: kind === 'FUND' ? r.amountMinor : 0n,
          capMinor: kind === 'SET_DEBIT_CAP' ? r.amountMinor : 0n,
        };
      }
      const request = this.buildTransfer(item.debtor, item.transfer);
      const instruction = instructionOf(request);
      // Counted as sent now so that later items of the group may pick its UETR.
      this.sentTransfers.push(request);
      return {
        request,
        creditor: request.creditorAgent,
        creditsMinor: instruction.currency === currency ? instruction.amountMinor : 0n,
        capMinor: 0n,
        describe: showInstruction(request),
        send: () => outcomeOf(this.client(request.debtorAgent).submitTransfer({ transfer: request, waitForFinal: false }), (r) => transferOutcome(r.result)),
        apply: (m) => m.submitTransfer(instruction),
      };
    });
    const settled = await Promise.allSettled(prepared.map((p) => p.send()));
    const observed = settled.map((s) => (s.status === 'fulfilled' ? s.value : errorOutcome(s.reason)));

    const search = (m: ClearingModel, remaining: number[]): ClearingModel | undefined => {
      if (remaining.length === 0) return m;
      for (const i of remaining) {
        const next = m.clone();
        if (!isDeepStrictEqual((prepared[i] as Prepared).apply(next), observed[i])) continue;
        const found = search(next, remaining.filter((j) => j !== i));
        if (found !== undefined) return found;
      }
      return undefined;
    };
    const linearized = search(this.model, prepared.map((_, i) => i));
    if (linearized === undefined) {
      throw new Error(
        `${label}: no order of the concurrent group explains the node's answers\n` +
          prepared.map((p, i) => `  ${p.describe}\n    → ${show(observed[i])}`).join('\n') +
          `\n  positions before: ${show([...this.model.banks.values()])}`,
      );
    }
    for (const o of observed) tally(o, 'concurrent');
    this.model.become(linearized);
  }

  /** The database, read back through the API, equals the model. */
  async verify(before: EurTotals): Promise<void> {
    const m = this.model;
    // Conservation inside the model first: a wrong model would make every other check meaningless.
    expect(m.balanceTotalMinor()).toBe(m.fundedMinor - m.defundedMinor);

    for (const b of m.banks.values()) {
      const expected = {
        bic: b.bic,
        currency,
        balanceMinor: b.position.balanceMinor,
        reservedMinor: 0n,
        debitCapMinor: b.position.debitCapMinor,
        availableMinor: availableOf(b.position),
      };
      expect(expected.availableMinor).toBeGreaterThanOrEqual(0n);
      const own = await this.client(b.bic).getPosition({ currency: '' });
      expect(own.positions.map(({ updateTime: _, ...p }) => p), `GetPosition of ${b.bic}`).toEqual([expected]);
      const listed = await this.t.operator.listPositions({ bic: b.bic, currency: '', pageSize: 0, pageToken: '' });
      expect(listed.positions.map(({ updateTime: _, ...p }) => p), `ListPositions of ${b.bic}`).toEqual([expected]);
      expect(listed.positions[0]?.availableMinor ?? -1n).toBeGreaterThanOrEqual(0n);
    }

    // Every stored transfer, read back by its debtor, has the model's result and content.
    for (const s of m.transfers.values()) {
      const i = s.instruction;
      const { transfer: record } = await this.client(i.debtorAgent).getTransfer({ lookup: { $case: 'instructionId', value: i.instructionId } });
      expect(
        {
          uetr: record?.transfer?.uetr,
          creditorAgent: record?.transfer?.creditorAgent,
          amount: record?.transfer?.amount,
          status: record?.result?.status,
          reasonCode: record?.result?.reasonCode,
        },
        `stored transfer ${i.debtorAgent}/${i.instructionId}`,
      ).toEqual({
        uetr: i.uetr,
        creditorAgent: i.creditorAgent,
        amount: { currency: i.currency, amountMinor: i.amountMinor },
        status: s.status === 'SETTLED' ? TransferStatus.TRANSFER_STATUS_SETTLED : TransferStatus.TRANSFER_STATUS_REJECTED,
        reasonCode: s.reasonCode,
      });
    }

    // Nothing stored beyond the model: as many transfers per bank as the model holds.
    for (const bic of [...this.bics, this.unknownBic]) {
      const expectedCount = [...m.transfers.values()].filter((s) => s.instruction.debtorAgent === bic || s.instruction.creditorAgent === bic).length;
      let count = 0;
      let pageToken = '';
      for (let page = 0; page < 100; page++) {
        const listed = await this.t.operator.listTransfers({ bic, status: TransferStatus.TRANSFER_STATUS_UNSPECIFIED, pageSize: 1000, pageToken });
        count += listed.transfers.length;
        pageToken = listed.nextPageToken;
        if (pageToken === '') break;
      }
      expect(count, `transfers listed for ${bic}`).toBe(expectedCount);
    }

    const expectedTotals = [
      before.fundedTotalMinor + m.fundedMinor,
      before.defundedTotalMinor + m.defundedMinor,
      before.balanceTotalMinor + m.balanceTotalMinor(),
      before.journalDebitTotalMinor + m.fundedMinor + m.defundedMinor + m.settledMinor,
    ];

    // Reconcile: clean, and this run moved exactly the model's liquidity and balances.
    const after = await reconcileEur(this.t);
    expect(after.violations).toEqual([]);
    expect(after.clean).toBe(true);
    expect(after.balanceTotalMinor).toBe(after.fundedTotalMinor - after.defundedTotalMinor);
    expect(after.reservedTotalMinor).toBe(0n);
    expect(after.reservedTransfersTotalMinor).toBe(0n);
    expect(after.journalDebitTotalMinor).toBe(after.journalCreditTotalMinor);
    expect({
      funded: after.fundedTotalMinor - before.fundedTotalMinor,
      defunded: after.defundedTotalMinor - before.defundedTotalMinor,
      balance: after.balanceTotalMinor - before.balanceTotalMinor,
      journal: after.journalDebitTotalMinor - before.journalDebitTotalMinor,
    }).toEqual({
      funded: m.fundedMinor,
      defunded: m.defundedMinor,
      balance: m.balanceTotalMinor(),
      journal: m.fundedMinor + m.defundedMinor + m.settledMinor,
    });
  }
}

interface EurTotals {
  clean: boolean;
  violations: unknown[];
  balanceTotalMinor: bigint;
  fundedTotalMinor: bigint;
  defundedTotalMinor: bigint;
  reservedTotalMinor: bigint;
  reservedTransfersTotalMinor: bigint;
  journalDebitTotalMinor: bigint;
  journalCreditTotalMinor: bigint;
}

async function reconcileEur(t: TestNode): Promise<EurTotals> {
  const r = await t.operator.reconcile({});
  const eur = r.totals.find((x) => x.currency === currency);
  return {
    clean: r.clean,
    violations: r.violations,
    balanceTotalMinor: BigInt(eur?.balanceTotalMinor ?? '0'),
    fundedTotalMinor: BigInt(eur?.fundedTotalMinor ?? '0'),
    defundedTotalMinor: BigInt(eur?.defundedTotalMinor ?? '0'),
    reservedTotalMinor: BigInt(eur?.reservedTotalMinor ?? '0'),
    reservedTransfersTotalMinor: BigInt(eur?.reservedTransfersTotalMinor ?? '0'),
    journalDebitTotalMinor: BigInt(eur?.journalDebitTotalMinor ?? '0'),
    journalCreditTotalMinor: BigInt(eur?.journalCreditTotalMinor ?? '0'),
  };
}

function envInteger(name: string): number | undefined {
  const raw = process.env[name];
  return raw === undefined || raw === '' ? undefined : Number(raw);
}

/** One run of a property: fresh banks on `t`, the commands, then the comparison with the model. */
async function checkRun(t: TestNode, { initialFundsMinor, initialDebitCapMinor, commands }: Run): Promise<void> {
  const runner = new Runner(t, runTag(runCount++));
  try {
    const before = await reconcileEur(t);
    await runner.setUp(initialFundsMinor, initialDebitCapMinor);
    for (const [i, c] of commands.entries()) await runner.step(`command #${i} (${c.op})`, c);
    await runner.verify(before);
  } finally {
    runner.close();
  }
}

function parameters(runs: number): fc.Parameters<[Run]> {
  return {
    numRuns: envInteger('PROPERTY_RUNS') ?? runs,
    seed: envInteger('PROPERTY_SEED'),
    path: process.env.PROPERTY_PATH || undefined,
    endOnFailure: process.env.PROPERTY_NO_SHRINK === '1',
  };
}

/** A run on a node of its own: Reconcile's totals then cover this run alone. */
async function checkRunOnOwnNode(r: Run): Promise<void> {
  const t = await startTestNode(nodeEnvironment);
  try {
    await checkRun(t, r);
  } finally {
    await t.stop();
  }
}

// Both ways of deciding a batch: read under its locks, and (every batch of
// transfers on rows the node knows) decided ahead, then checked under the locks.
describe.each([
  { path: 'batches read under their locks', decideAheadOperationsMin: '0' },
  { path: 'batches of transfers decided ahead of their locks', decideAheadOperationsMin: '1' },
])('one node, many runs, $path', ({ decideAheadOperationsMin }) => {
  let t: TestNode;
  beforeAll(async () => {
    t = await startTestNode({
      ...nodeEnvironment,
      CLEARING_DECIDE_AHEAD_OPERATIONS_MIN: decideAheadOperationsMin,
      // Decided ahead again right after a refusal (an operator's change in a run): more batches take that path.
      CLEARING_DECIDE_AHEAD_COOLDOWN_MS: '0',
    });
  });
  afterAll(async () => {
    await t?.stop();
  });

  test(
    'any sequence of operations leaves positions, transfers and Reconcile equal to the model',
    async () => {
      await fc.assert(
        fc.asyncProperty(runsOf(false), (r) => checkRun(t, r)),
        parameters(runsDefault),
      );
    },
    propertyTimeoutMs,
  );
});

describe('amounts up to 2^63-1, a node per run', () => {
  test(
    'positions near 2^63-1: position limit, creditor overflow, and the database still equal the model',
    async () => {
      await fc.assert(
        // Reconcile's totals add up every run of a database; near 2^63-1 each run needs its own.
        fc.asyncProperty(runsOf(true), (r) => checkRunOnOwnNode(r)),
        parameters(extremeRunsDefault),
      );
    },
    propertyTimeoutMs,
  );

  // Counterexamples the property once found, kept as regression tests.

  // Reconcile's totals are sums over every position and liquidity operation of a
  // currency and may pass 2^63-1: they travel as decimal strings, exactly.
  test('Reconcile reports totals past 2^63-1 exactly', async () => {
    await checkRunOnOwnNode({ initialFundsMinor: [int64Max, 1n, 1n], initialDebitCapMinor: 0n, commands: [] });
  });

  // A credit that would lift the creditor's balance + debit cap past 2^63-1 used to
  // overflow the positions CHECK and fail its whole batch; it is rejected AM02 alone.
  test('a credit lifting balance + debit cap above 2^63-1 is rejected AM02, alone', async () => {
    await checkRunOnOwnNode(
      {
        initialFundsMinor: [1_000n, 1_000n, 1_000n],
        initialDebitCapMinor: 0n,
        commands: [
          { op: 'setDebitCap', amount: { from: 'headroom', deltaMinor: 0n } },
          { op: 'transfer', debtor: 1, transfer: { creditorStep: 2, currency, amount: { from: 'zero', deltaMinor: 10n }, uetrOf: null } },
        ],
      },
    );
  });
});
