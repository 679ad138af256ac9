// The settlement engine: a bounded queue of operations drained by one loop in
// batches, each settled in one Postgres transaction (group commit, see
// DESIGN.md). A caller's promise resolves only after its batch committed.
import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClearingError } from './errors.js';
import { batchKeys, decideBatch, someParticipant, type Operation, type OperationOutcome } from './batch.js';
import { BatchIds, isRetryableSettlementError, runExpectedSettlementBatch, runSettlementBatch, type SettlementOrigin } from '../store/settlement.js';
import { ExpectedState } from './expected-state.js';
import type { Logger } from '../telemetry/logger.js';
import type { BatchKeys, BatchSnapshot, BatchWrites } from '../store/rows.js';

export interface EngineLimits {
  /** Most operations waiting in the queue; a submit that does not fit gets RESOURCE_EXHAUSTED. */
  queueOperationsMax: number;
  /** Most operations in one settlement transaction. */
  batchOperationsMax: number;
  /** How long the loop lingers for more operations when a batch is not full (0 = never). */
  batchWaitMs: number;
  /** How many times a batch is retried after a deadlock, serialization failure or lost race. */
  batchRetryMax: number;
  /**
   * How many batches may be in flight at once, each in its own transaction:
   * while one waits for Postgres (its COMMIT's fsync), the next is decided.
   * Batches touching the same positions still serialize on the row locks.
   */
  settlementPipelines: number;
  /**
   * Batches of at least this many operations are decided before their locks
   * are taken, against what this node's own batches left in the rows, and
   * checked by Postgres (settlement_expect) under the locks; smaller ones are
   * read under their locks. 0 = never. Deciding ahead costs a round trip more
   * (outside the locks) and pays off where the locked section is long.
   */
  decideAheadOperationsMin: number;
  /**
   * After Postgres refused a batch decided ahead (its rows had changed:
   * another node, an operator), batches are read under their locks for this
   * long: with another node settling on the same participants, expectations
   * would mostly be wrong.
   */
  decideAheadCooldownMs: number;
  /**
   * How long a pipeline waits, at most, for a batch in flight on the
   * participants at the head of the queue before it takes the next batch
   * anyway (see mayTakeNext): a batch stuck on a lock someone else holds
   * (lock_timeout, retries) must not hold every other batch back.
   */
  nextBatchWaitMaxMs: number;
  transferAmountMaxMinor: bigint;
  reservationTimeoutMs: number;
}

/** What the engine needs to know about the call an operation came from. */
export interface CallContext {
  /** True once the client cancelled the call or went away. */
  cancelled(): boolean;
  /** Epoch milliseconds after which the client no longer waits; Infinity when none. */
  deadlineMs: number;
}

interface Pending {
  operation: Operation;
  call: CallContext;
  /** What the observer handed back when the operation was queued (e.g. its span). */
  observed: unknown;
  resolve: (outcome: OperationOutcome) => void;
}

/** What the observer follows of one attempt of one batch. */
export interface BatchObservation {
  /** Runs the transaction inside the batch's context (its span, for the SQL spans). */
  run<T>(transaction: () => Promise<T>): Promise<T>;
  committed(batch: {
    batchId: bigint;
    operations: readonly Operation[];
    outcomes: readonly OperationOutcome[];
    durationMs: number;
    /** `expected`: decided before its locks, against this node's expectation; `locked`: read under its locks. */
    path: 'expected' | 'locked';
    /**
     * Whether the batch read which of its instruction ids and UETRs are
     * stored; false: decided ahead assuming none, as the write's unique
     * indexes then checked (runExpectedSettlementBatch).
     */
    storedRead: boolean;
  }): void;
  failed(error: unknown, final: boolean): void;
}

/**
 * Hooks for tracing and metrics, so they wrap the engine instead of being
 * sprinkled through it. `queued` runs in the submitting call's context.
 */
export interface EngineObserver {
  queued(operation: Operation): unknown;
  batch(observed: readonly unknown[], attempt: number): BatchObservation;
  /** An operation answered without settlement (cancelled, past its deadline). */
  abandoned(observed: unknown, outcome: OperationOutcome): void;
  /** Reads the queue depth when metrics are collected. */
  watchQueue(depth: () => number): void;
}

const passThrough: BatchObservation = { run: (transaction) => transaction(), committed: () => {}, failed: () => {} };

export const noObserver: EngineObserver = {
  queued: () => undefined,
  batch: () => passThrough,
  abandoned: () => {},
  watchQueue: () => {},
};

const retryBackoffBaseMs = 2;

/**
 * After a batch decided ahead without reading its stored ids found one taken
 * (23505: replays come in bursts, a resent bulk call say), batches decided
 * ahead read them first for this long, so that each replay does not cost a
 * refused write.
 */
export const storedReadAfterConflictMs = 1_000;

/**
 * The node's nextBatchWaitMaxMs: longer than a busy batch takes (~5-40 ms in
 * the benchmarks), far shorter than a lock wait that ends in lock_timeout (2 s).
 */
export const nextBatchWaitMaxMsDefault = 50;

const noWait: Promise<void> = Promise.resolve();

/**
 * Makes `own` the last turn of each participant: the participant's turn then
 * resolves when the earlier ones and `own` have. The entry is removed once
 * it resolved and no later turn replaced it, so the map holds only
 * participants with batches in flight.
 */
function chainTurn(turns: Map<string, Promise<void>>, participants: readonly string[], own: Promise<void>): void {
  for (const bic of participants) {
    const before = turns.get(bic);
    const after = before === undefined ? own : Promise.all([before, own]).then(() => undefined);
    turns.set(bic, after);
    void after.then(() => {
      if (turns.get(bic) === after) turns.delete(bic);
    });
  }
}

/** settlement_expect's refusal: the rows were not what the batch was decided against. */
const isRefusal = (error: unknown) => (error as { code?: string } | undefined)?.code === '40001';

export class SettlementEngine {
  // A ring-free FIFO: `head` advances on take and the array is compacted when
  // the consumed prefix gets large, so taking a batch is O(batch).
  private queue: Pending[] = [];
  private head = 0;
  private sleepers: (() => void)[] = [];
  private stopping = false;
  private loops: Promise<void>[] | undefined;
  private readonly expected: ExpectedState;
  /** Batch ids for batches decided ahead without reading what is stored. */
  private readonly batchIds: BatchIds;
  /**
   * Until then, batches decided ahead read which of their instruction ids and
   * UETRs are stored: set when a batch that assumed none found one taken
   * (replays come in bursts, and each would cost a refused write).
   */
  private readStoredUntilMs = 0;
  /**
   * Per participant with batches in flight: resolves when every batch started
   * so far on it holds its locks and has decided (or failed). At most one
   * entry per participant, removed once its batches have all decided.
   */
  private readonly decidedBy = new Map<string, Promise<void>>();
  /** Per participant, likewise: when every batch decided ahead so far on it holds its locks (or failed). */
  private readonly aheadLockedBy = new Map<string, Promise<void>>();
  /** Participants of the batches in flight, with how many batches hold each (see mayTakeNext). */
  private readonly inFlight = new Map<string, number>();
  /** Pipelines waiting for a batch in flight to end before they take the next one. */
  private finishWaiters: (() => void)[] = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly origin: SettlementOrigin,
    private readonly limits: EngineLimits,
    private readonly logger: Logger,
    /**
     * Called after each COMMIT with what the batch wrote; `notifications` are
     * the topics it touched (`inbound:<BIC>`, `confirmations:<BIC>`).
     */
    private readonly onCommitted: (writes: BatchWrites) => void = () => {},
    private readonly observer: EngineObserver = noObserver,
  ) {
    observer.watchQueue(() => this.queueDepth);
    if (limits.batchOperationsMax < 1 || limits.queueOperationsMax < limits.batchOperationsMax) {
      throw new Error('engine limits: need 1 <= batchOperationsMax <= queueOperationsMax');
    }
    if (limits.settlementPipelines < 1) throw new Error('engine limits: need settlementPipelines >= 1');
    if (!(limits.nextBatchWaitMaxMs >= 0)) throw new Error('engine limits: need nextBatchWaitMaxMs >= 0');
    if (!Number.isInteger(limits.decideAheadOperationsMin) || limits.decideAheadOperationsMin < 0) {
      throw new Error('engine limits: need decideAheadOperationsMin >= 0 (0 = never)');
    }
    this.expected = new ExpectedState(limits.decideAheadCooldownMs);
    this.batchIds = new BatchIds();
  }

  get queueDepth(): number {
    return this.queue.length - this.head;
  }


  start(): void {
    if (this.loops !== undefined) throw new Error('settlement engine already started');
    this.loops = Array.from({ length: this.limits.settlementPipelines }, () => this.run());
  }

  /** Stops taking new operations, settles what is queued, then ends the loop. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wakeAll();
    await Promise.all(this.loops ?? []);
  }

  /**
   * Queues operations as one unit (all or none) and resolves with one outcome
   * per operation, in order, after the batch(es) holding them committed.
   */
  submit(operations: readonly Operation[], call: CallContext): Promise<OperationOutcome[]> {
    if (this.stopping) {
      return Promise.reject(new ClearingError('UNAVAILABLE', 'NODE_STOPPING', 'the node is shutting down; retry on another node'));
    }
    if (this.queueDepth + operations.length > this.limits.queueOperationsMax) {
      return Promise.reject(
        new ClearingError(
          'RESOURCE_EXHAUSTED',
          'SETTLEMENT_QUEUE_FULL',
          `the settlement queue is full (${this.limits.queueOperationsMax} operations); retry with backoff`,
          { metadata: { queue_operations_max: String(this.limits.queueOperationsMax) } },
        ),
      );
    }
    return new Promise((resolveAll) => {
      const outcomes = new Array<OperationOutcome>(operations.length);
      let remaining = operations.length;
      if (remaining === 0) return resolveAll([]);
      operations.forEach((operation, index) => {
        this.queue.push({
          operation,
          call,
          observed: this.observer.queued(operation),
          resolve: (outcome) => {
            outcomes[index] = outcome;
            if (--remaining === 0) resolveAll(outcomes);
          },
        });
      });
      this.wakeAll();
      // A pipeline waiting for a batch in flight may take this one now.
      if (this.enoughToDecideAhead()) this.wakeFinishWaiters();
    });
  }

  private wakeAll(): void {
    const sleepers = this.sleepers;
    this.sleepers = [];
    for (const wake of sleepers) wake();
  }

  private take(): Pending[] {
    const end = Math.min(this.queue.length, this.head + this.limits.batchOperationsMax);
    const batch = this.queue.slice(this.head, end);
    this.head = end;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return batch;
  }

  private async run(): Promise<void> {
    for (;;) {
      if (this.queueDepth === 0) {
        if (this.stopping) return;
        await new Promise<void>((resolve) => this.sleepers.push(resolve));
        continue;
      }
      if (this.limits.batchWaitMs > 0 && this.queueDepth < this.limits.batchOperationsMax && !this.stopping) {
        await sleep(this.limits.batchWaitMs);
      }
      if (!this.mayTakeNext() && (await this.untilBatchEnds(this.limits.nextBatchWaitMaxMs))) continue;
      const batch = this.dropAbandoned(this.take());
      if (batch.length > 0) await this.settle(batch);
    }
  }

  /**
   * Whether a pipeline may take the next batch now. Not while a batch in
   * flight shares a participant with the operation at the head of the queue,
   * unless enough is queued to decide a batch ahead: such a batch would only
   * wait in Postgres for that batch's row locks, and meanwhile the queue
   * grows into one larger batch. With 20 banks every small batch shares
   * participants with the one before it, and taking at once (as every
   * pipeline did before) only made batches smaller and woke one more waiting
   * Postgres backend per batch: Postgres used 0.03-0.07 cores less with this
   * in every benchmark workload (docs/benchmarks.md, sixth round). Batches on
   * participants nobody is settling still start at once, in parallel.
   */
  private mayTakeNext(): boolean {
    if (this.inFlight.size === 0 || this.enoughToDecideAhead()) return true;
    const head = this.queue[this.head];
    if (head === undefined) return true;
    return !someParticipant(head.operation, (bic) => this.inFlight.has(bic));
  }

  /** Whether enough is queued for a batch decided ahead of its locks. */
  private enoughToDecideAhead(): boolean {
    const min = this.limits.decideAheadOperationsMin;
    return min > 0 && this.queueDepth >= min;
  }

  /** Marks `participants` as held by one more batch in flight, until the returned function is called. */
  private hold(participants: readonly string[]): () => void {
    for (const bic of participants) this.inFlight.set(bic, (this.inFlight.get(bic) ?? 0) + 1);
    return () => {
      for (const bic of participants) {
        const left = (this.inFlight.get(bic) ?? 1) - 1;
        if (left === 0) this.inFlight.delete(bic);
        else this.inFlight.set(bic, left);
      }
      this.wakeFinishWaiters();
    };
  }

  /** True when a batch in flight ended (or enough got queued) within `timeoutMs`, false when the time ran out. */
  private untilBatchEnds(timeoutMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.finishWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private wakeFinishWaiters(): void {
    const waiters = this.finishWaiters;
    this.finishWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Orders batches where deciding ahead needs it, and nowhere else.
   *
   * Batches are ordered per participant: rows of participants no earlier
   * batch in flight touches are as the node last left them, so a batch waits
   * only for earlier batches that share a participant with it (one bank's
   * stuck lock does not hold up the others' batches).
   *
   * A batch decided ahead (`ahead`) decides only after every such earlier
   * batch has decided, so this node's expectation includes their effects,
   * and each of those holds its locks by then, so in Postgres it queues behind
   * them: two batches sent a moment apart on two connections otherwise reach
   * their locks in either order (measured: dozens of batches a second decided
   * again in the fan-out benchmark). A batch read under its locks waits only
   * for the batches decided ahead before it to hold their locks (else it could
   * overtake them and prove their expectation wrong); among themselves such
   * batches queue in Postgres as they always did. Waiting in this process for
   * a batch read under its locks before asking for one's own (as every batch
   * did in the first version of this) cost unary 8–16 %: an extra pass through
   * a busy event loop per small batch.
   *
   * `release` is called once the batch holds its locks and has decided (or
   * has failed); until then the batches after it wait as described.
   */
  private takeTurn(participants: readonly string[], ahead: boolean): { ready: Promise<void>; release: () => void } {
    let release!: () => void;
    const own = new Promise<void>((resolve) => (release = resolve));
    const waitedFor = ahead ? this.decidedBy : this.aheadLockedBy;
    const earlier: Promise<void>[] = [];
    for (const bic of participants) {
      const turn = waitedFor.get(bic);
      if (turn !== undefined && !earlier.includes(turn)) earlier.push(turn);
    }
    chainTurn(this.decidedBy, participants, own);
    if (ahead) chainTurn(this.aheadLockedBy, participants, own);
    const ready = earlier.length === 0 ? noWait : Promise.all(earlier).then(() => undefined);
    return { ready, release };
  }

  /** A call cancelled or past its deadline before its batch starts is not applied. */
  private dropAbandoned(batch: Pending[]): Pending[] {
    const nowMs = Date.now();
    return batch.filter((p) => {
      let error: ClearingError | undefined;
      if (p.call.cancelled()) {
        error = new ClearingError('CANCELLED', 'CALL_CANCELLED', 'the call was cancelled before settlement; nothing was applied');
      } else if (p.call.deadlineMs <= nowMs) {
        error = new ClearingError('DEADLINE_EXCEEDED', 'DEADLINE_BEFORE_SETTLEMENT', 'the call\'s deadline passed before settlement; nothing was applied');
      }
      if (error === undefined) return true;
      const outcome: OperationOutcome = { kind: 'error', error };
      this.observer.abandoned(p.observed, outcome);
      p.resolve(outcome);
      return false;
    });
  }

  /**
   * Hands a committed batch to the streams. The batch is committed whatever
   * happens here: a failure is logged and must not turn into a retry or an
   * error answer (streams then catch up from the database).
   */
  private afterCommit(writes: BatchWrites): void {
    try {
      this.onCommitted(writes);
    } catch (error) {
      this.logger.error({ err: error }, 'a committed batch could not be handed to the streams; they will read it from the database');
    }
  }

  private async settle(batch: Pending[]): Promise<void> {
    const operations = batch.map((p) => p.operation);
    const observed = batch.map((p) => p.observed);
    const keys = batchKeys(operations);
    const release = this.hold(keys.participants);
    try {
      await this.settleHeld(batch, operations, observed, keys);
    } finally {
      release();
    }
  }

  private async settleHeld(batch: Pending[], operations: Operation[], observed: unknown[], keys: BatchKeys): Promise<void> {
    // First decided against what this node's batches left behind, when it
    // knows every row; then, or if that proved wrong, read under the locks.
    let ahead =
      this.limits.decideAheadOperationsMin > 0 &&
      operations.length >= this.limits.decideAheadOperationsMin &&
      this.expected.rowsFor(operations, keys, Date.now()) !== undefined;
    for (let attempt = 0, retries = 0; ; attempt++) {
      const startedMs = performance.now();
      let written: BatchWrites | undefined;
      let batchId = 0n;
      let path: 'expected' | 'locked' = ahead ? 'expected' : 'locked';
      // Decided ahead (new transfers only: ExpectedState.rowsFor), as if none
      // of their ids were stored (the write's unique indexes check), unless a
      // recent batch found some.
      const storedRead = path === 'locked' || Date.now() < this.readStoredUntilMs;
      /** The expectation's generation this batch decided on (ExpectedState.generation). */
      let decidedGeneration = -1;
      /** How often this attempt itself forgot the expectation (its refusal, its failed write). */
      let forgottenHere = 0;
      const observation = this.observer.batch(observed, attempt);
      const turn = this.takeTurn(keys.participants, path === 'expected');
      try {
        const outcomes = await observation.run(async () => {
          const decide = (snapshot: BatchSnapshot) => {
            const decided = decideBatch(operations, snapshot, {
              transferAmountMaxMinor: this.limits.transferAmountMaxMinor,
              reservationTimeoutMs: this.limits.reservationTimeoutMs,
              now: new Date(),
            });
            written = decided.writes;
            batchId = snapshot.batchId;
            // Remembered only where it may be used: with deciding ahead off, no copies per batch.
            if (this.limits.decideAheadOperationsMin > 0) this.expected.decided(snapshot, decided.writes);
            // Read under its locks, the batch holds them already: the next may
            // decide. (Decided ahead, it waits for settlement_expect's answer.)
            if (path === 'locked') turn.release();
            return decided;
          };
          let committed: OperationOutcome[] | undefined;
          if (path === 'expected') {
            const ran = await runExpectedSettlementBatch(
              this.pool,
              this.origin,
              keys,
              async () => {
                await turn.ready;
                decidedGeneration = this.expected.generation;
                return this.expected.rowsFor(operations, keys, Date.now());
              },
              decide,
              {
                locked: (failure) => {
                  // Failed (refused, or the locks not granted): what it decided
                  // will not commit, so forget it before the next batch decides on it.
                  // Whether a refusal starts the cooldown is settled below, once
                  // the batches before it have surely reported how they ended.
                  if (failure !== undefined) {
                    forgottenHere += 1;
                    this.expected.forget(Date.now(), false);
                  }
                  turn.release();
                },
                // Its turn is released already and the next batch may have decided
                // on it: forget at once, so that batch's refusal is seen as caused here.
                writeFailed: () => {
                  forgottenHere += 1;
                  this.expected.forget(Date.now(), false);
                },
              },
              storedRead ? { kind: 'read' } : { kind: 'assumed-none', batchIds: this.batchIds },
            );
            if (ran.ran) committed = ran.result;
            else path = 'locked'; // forgotten meanwhile; its turn came (ready) and is kept
          } else {
            await turn.ready;
          }
          if (committed === undefined) {
            committed = await runSettlementBatch(this.pool, this.origin, keys, decide);
          }
          // Logged inside the batch's span, so the line carries its trace id (while traces are exported).
          this.logger.debug(
            { batchId: batchId.toString(), operations: batch.length, attempt, path, durationMs: Math.round((performance.now() - startedMs) * 1000) / 1000 },
            'settlement batch committed',
          );
          return committed;
        });
        turn.release(); // a batch of replays only decides nothing it must send
        const durationMs = performance.now() - startedMs;
        if (written !== undefined) this.afterCommit(written);
        observation.committed({ batchId, operations, outcomes, durationMs, path, storedRead: storedRead || path === 'locked' });
        for (let i = 0; i < batch.length; i++) (batch[i] as Pending).resolve(outcomes[i] as OperationOutcome);
        return;
      } catch (error) {
        turn.release();
        // Whatever this batch decided did not commit: expectations built on it
        // are wrong. Only a refusal (the rows were not as expected) says another
        // writer is about; an instruction id or UETR taken meanwhile (23505) does not.
        // A refusal starts the cooldown unless an earlier batch of this node
        // failed after this one decided on it (it forgot the expectation): that
        // explains the refusal. Asked here, after this batch's ROLLBACK: the
        // earlier batch's failure reached this process before the refusal was
        // even made (the refusal waited for its locks), though not always
        // before the refusal was handled.
        const forgottenElsewhere = this.expected.generation - decidedGeneration - forgottenHere > 0;
        this.expected.forget(Date.now(), path === 'expected' && isRefusal(error) && !forgottenElsewhere);
        if (path === 'expected' && !storedRead && (error as { code?: string } | undefined)?.code === '23505') {
          this.readStoredUntilMs = Date.now() + storedReadAfterConflictMs;
        }
        const retryable = isRetryableSettlementError(error);
        if (path === 'expected' && retryable) {
          // The rows changed since (another node, an operator), or an id was
          // taken meanwhile: decide again at once, reading under the locks.
          observation.failed(error, false);
          this.logger.debug({ attempt, code: (error as { code?: string }).code, reason: (error as Error).message }, 'settlement batch decided ahead did not hold; deciding under the locks');
          ahead = false;
          continue;
        }
        const retry = retryable && retries < this.limits.batchRetryMax;
        observation.failed(error, !retry);
        if (retry) {
          this.logger.info({ attempt, code: (error as { code?: string }).code }, 'settlement batch conflicted; retrying');
          await sleep(retryBackoffBaseMs * 2 ** retries * (0.5 + Math.random()));
          retries++;
          continue;
        }
        this.logger.error({ err: error, operations: batch.length, attempt }, 'settlement batch failed; nothing applied');
        const failure = new ClearingError(
          'UNAVAILABLE',
          'SETTLEMENT_UNAVAILABLE',
          'settlement failed and nothing was applied; retry the same instruction',
          { cause: error },
        );
        for (const p of batch) p.resolve({ kind: 'error', error: failure });
        return;
      }
    }
  }
}
