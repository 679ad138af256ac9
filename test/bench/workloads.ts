// The workloads. Each starts its load, lets it warm up, measures for the
// configured duration, then stops issuing and drains what is in flight, so the
// ledger holds every outcome the node committed before the final check.
import type { ClientReadableStream } from '@grpc/grpc-js';
import type { Histogram } from 'hdr-histogram-js';
import type { StreamConfirmationsResponse, StreamInboundTransfersResponse, TransferAnswer } from '../../src/gen/clearing/v1/clearing_service.js';
import { CreditorDecision, TransferStatus, type CreditTransfer, type TransferResult } from '../../src/gen/clearing/v1/transfer.js';
import type { BenchOptions, WorkloadName } from './options.js';
import { cpuBetween, type CpuGroup, type CpuSample } from './processes.js';
import { randomIndex, randomPair, Recorder, summarize, type ChannelPool, type LatencySummary, type Ledger, type TransferFactory } from './load.js';

/** After a failed call a loop pauses this long, so an overloaded or dead node is not hammered in a tight loop. */
const errorBackoffMs = 5;
/** Open loop: most calls outstanding at once; a send due beyond it is dropped and counted. */
export const openLoopOutstandingMax = 10_000;
/**
 * Open loop: the measured window starts once the warm-up's backlog has
 * drained, when at most this many seconds of the offered rate are
 * outstanding. A node that falls behind while it warms up (its first second,
 * before the JIT compiler has caught up, measured at half the offered rate)
 * would otherwise spend the start of the window catching up, and its p99 would
 * be that catch-up, not the steady state the goal is about. Queueing inside
 * the window counts in full.
 */
export const openLoopDrainedBacklogSeconds = 0.1;
/**
 * Open loop: the longest wait for the backlog beyond `--warmup`; a node that
 * does not drain it is measured anyway, and the notes say so. Outstanding
 * calls are the rate times the mean latency, so a node whose steady mean
 * latency is above openLoopDrainedBacklogSeconds waits the whole time too.
 */
export const openLoopDrainWaitSecondsMax = 20;
/** How often the drain wait looks at the backlog. */
const drainPollMs = 50;
/** Two-phase: a creditor answers once this many transfers are waiting... */
const respondBatchAnswersMax = 500;
/** ...or this long after the first of them arrived. */
const respondLingerMs = 5;
/** Two-phase: how often a broken inbound stream is reopened before the workload gives up on it. */
const inboundReconnectsMax = 5;
/** Fan-out: how long the end of the run waits for every subscriber to have received every confirmation. */
const fanoutDrainTimeoutMs = 15_000;

export type Target = 'node' | 'ceiling';

export interface WorkloadResult {
  /** The workload, e.g. `unary`; ceiling runs are `unary` with target `ceiling`. */
  workload: WorkloadName;
  target: Target;
  /** What the latency columns measure. */
  latencyOf: string;
  /** Measured wall-clock seconds. */
  seconds: number;
  callsPerSecond: number;
  settledPerSecond: number;
  /** Transfers answered per second (SubmitTransfers: every item of every call). */
  transfersPerSecond: number;
  latencyMs: LatencySummary;
  /** Failed calls by gRPC status code, and workload-level problems (stream gaps, missing confirmations). */
  errors: Record<string, number>;
  /** Transfers answered REJECTED or EXPIRED, by ISO reason code. */
  rejected: Record<string, number>;
  /** Workload-specific figures (drops, offered rate, deliveries, other latencies). */
  details: Record<string, unknown>;
  /** Cores used during the measured window by each group of processes. */
  cpuCores: Record<CpuGroup, number>;
  /** Cores used by processes outside the benchmark in the second before the run started. */
  otherCoresBefore: number;
}

export interface WorkloadContext {
  options: BenchOptions;
  factory: TransferFactory;
  /** Prints the progress line; returns a function that stops it. */
  progress(label: string, recorder: Recorder): () => void;
  sampleCpu(): CpuSample;
  /** Waits (bounded) for the machine to be quiet; returns the cores other processes used just before. */
  waitQuiet(label: string): Promise<number>;
  /** Called between warm-up and the measured window (e.g. ANALYZE with --analyze). */
  beforeMeasuring(): Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function record(map: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...map.entries()].sort(([a], [b]) => a.localeCompare(b)));
}

interface Load {
  start(): void;
  /** Stops issuing and resolves once everything in flight has completed. */
  stop(): Promise<void>;
  /** Open loops: whether what is outstanding is down to a steady state's (see openLoopDrainedBacklogSeconds). */
  drained?(): boolean;
}

/** Warm-up, measured window, drain; returns the cores used in the window. Exported for its tests. */
export async function measure(context: WorkloadContext, label: string, recorder: Recorder, load: Load): Promise<Record<CpuGroup, number>> {
  recorder.otherCoresBefore = await context.waitQuiet(label);
  const stopProgress = context.progress(label, recorder);
  try {
    const startedMs = performance.now();
    load.start();
    await sleep(context.options.warmupSeconds * 1000);
    if (load.drained !== undefined) {
      const deadlineMs = performance.now() + openLoopDrainWaitSecondsMax * 1000;
      while (!load.drained() && performance.now() < deadlineMs) await sleep(drainPollMs);
      recorder.backlogDrained = load.drained();
    }
    recorder.warmupSeconds = (performance.now() - startedMs) / 1000;
    await context.beforeMeasuring();
    const from = context.sampleCpu();
    recorder.beginMeasuring();
    await sleep(context.options.durationSeconds * 1000);
    recorder.endMeasuring();
    const to = context.sampleCpu();
    await load.stop();
    return cpuBetween(from, to);
  } finally {
    stopProgress();
  }
}

function resultOf(
  workload: WorkloadName,
  target: Target,
  latencyOf: string,
  recorder: Recorder,
  cpuCores: Record<CpuGroup, number>,
  details: Record<string, unknown> = {},
): WorkloadResult {
  const seconds = recorder.measuredSeconds;
  const extraLatency: Record<string, LatencySummary> = {};
  for (const [name, h] of recorder.extraLatency) extraLatency[name] = summarize(h);
  return {
    workload,
    target,
    latencyOf,
    seconds: Math.round(seconds * 100) / 100,
    callsPerSecond: Math.round(recorder.calls / seconds),
    settledPerSecond: Math.round(recorder.settled / seconds),
    transfersPerSecond: Math.round(recorder.transfers / seconds),
    latencyMs: summarize(recorder.latency),
    errors: record(recorder.errors),
    rejected: record(recorder.rejected),
    details: {
      ...details,
      ...record(recorder.counters),
      statuses: record(recorder.statuses),
      ...(Object.keys(extraLatency).length > 0 ? { latencyMs: extraLatency } : {}),
      warmupSeconds: Math.round(recorder.warmupSeconds * 10) / 10,
      ...(recorder.backlogDrained === undefined ? {} : { backlogDrained: recorder.backlogDrained }),
    },
    cpuCores,
    otherCoresBefore: recorder.otherCoresBefore,
  };
}

function resultsOfCall(result: TransferResult | undefined): TransferResult[] {
  return result === undefined ? [] : [result];
}

// --- unary: closed loop --------------------------------------------------------------------

/** `inFlight` loops, each sending SubmitTransfer and sending the next when the answer arrives. */
export async function runUnary(context: WorkloadContext, pool: ChannelPool, banks: readonly string[], ledger: Ledger, target: Target): Promise<WorkloadResult> {
  const recorder = new Recorder(ledger);
  const { inFlight } = context.options;
  let stopped = false;
  const loops: Promise<void>[] = [];
  const loop = async () => {
    while (!stopped) {
      const [debtor, creditor] = randomPair(banks);
      const transfer = context.factory.make(debtor, creditor);
      const startedMs = performance.now();
      try {
        const response = await pool.submitTransfer(transfer);
        recorder.callSucceeded(resultsOfCall(response.result), performance.now() - startedMs);
      } catch (error) {
        recorder.callFailed(error, 1);
        await sleep(errorBackoffMs);
      }
    }
  };
  const cpu = await measure(context, target === 'node' ? 'unary' : 'unary ceiling', recorder, {
    start() {
      for (let i = 0; i < inFlight; i++) loops.push(loop());
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  });
  return resultOf('unary', target, 'SubmitTransfer call', recorder, cpu, { inFlight, channels: pool.channels });
}

// --- batch: SubmitTransfers ----------------------------------------------------------------

/** `batchCallers` loops, each sending SubmitTransfers of `batchSize` transfers from one random debtor. */
export async function runBatch(context: WorkloadContext, pool: ChannelPool, banks: readonly string[], ledger: Ledger, target: Target): Promise<WorkloadResult> {
  const recorder = new Recorder(ledger);
  const { batchCallers, batchSize } = context.options;
  let stopped = false;
  const loops: Promise<void>[] = [];
  const loop = async () => {
    while (!stopped) {
      const debtorIndex = randomIndex(banks.length);
      const debtor = banks[debtorIndex] as string;
      const transfers: CreditTransfer[] = [];
      for (let i = 0; i < batchSize; i++) {
        let creditorIndex = randomIndex(banks.length - 1);
        if (creditorIndex >= debtorIndex) creditorIndex += 1;
        transfers.push(context.factory.make(debtor, banks[creditorIndex] as string));
      }
      const startedMs = performance.now();
      try {
        const response = await pool.submitTransfers(debtor, transfers);
        if (response.results.length !== transfers.length) recorder.problem(`RESULT_COUNT_MISMATCH`);
        recorder.callSucceeded(response.results, performance.now() - startedMs);
      } catch (error) {
        recorder.callFailed(error, transfers.length);
        await sleep(errorBackoffMs);
      }
    }
  };
  const cpu = await measure(context, target === 'node' ? 'batch' : 'batch ceiling', recorder, {
    start() {
      for (let i = 0; i < batchCallers; i++) loops.push(loop());
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  });
  return resultOf('batch', target, 'SubmitTransfers call', recorder, cpu, { batchSize, batchCallers, channels: pool.channels });
}

// --- open loop -----------------------------------------------------------------------------

/**
 * Sends at a fixed rate regardless of how fast answers come back. A send is
 * due at `start + i / rate`; its latency is measured from that due time, not
 * from when the event loop got round to sending it, so queueing in the load
 * generator or the node shows up in the figures instead of silently lowering
 * the rate (coordinated omission).
 */
export function openLoop(
  ratePerSecond: number,
  recorder: Recorder,
  send: (dueMs: number) => Promise<void>,
): Load {
  const intervalMs = 1000 / ratePerSecond;
  let timer: NodeJS.Timeout | undefined;
  let outstanding = 0;
  let drained: (() => void) | undefined;
  let startMs = 0;
  let due = 0;
  const tick = () => {
    const nowMs = performance.now();
    const dueNow = Math.floor((nowMs - startMs) / intervalMs) + 1;
    while (due < dueNow) {
      const dueMs = startMs + due * intervalMs;
      due += 1;
      recorder.count('scheduled');
      if (outstanding >= openLoopOutstandingMax) {
        recorder.count('dropped');
        continue;
      }
      outstanding += 1;
      void send(dueMs).finally(() => {
        outstanding -= 1;
        if (outstanding === 0) drained?.();
      });
    }
    timer = setTimeout(tick, 1);
  };
  const drainedOutstandingMax = Math.max(1, Math.ceil(ratePerSecond * openLoopDrainedBacklogSeconds));
  return {
    start() {
      startMs = performance.now();
      tick();
    },
    drained: () => outstanding <= drainedOutstandingMax,
    async stop() {
      clearTimeout(timer);
      if (outstanding > 0) await new Promise<void>((resolve) => (drained = resolve));
    },
  };
}

export async function runOpen(context: WorkloadContext, pool: ChannelPool, banks: readonly string[], ledger: Ledger): Promise<WorkloadResult> {
  const recorder = new Recorder(ledger);
  const rate = context.options.ratePerSecond;
  const load = openLoop(rate, recorder, async (dueMs) => {
    const [debtor, creditor] = randomPair(banks);
    const transfer = context.factory.make(debtor, creditor);
    const sentMs = performance.now();
    try {
      const response = await pool.submitTransfer(transfer);
      const doneMs = performance.now();
      recorder.recordLatency(doneMs - sentMs, recorder.extra('call (from actual send)'));
      recorder.callSucceeded(resultsOfCall(response.result), doneMs - dueMs);
    } catch (error) {
      recorder.callFailed(error, 1);
    }
  });
  const cpu = await measure(context, 'open', recorder, load);
  return resultOf('open', 'node', 'SubmitTransfer, from scheduled send', recorder, cpu, {
    offeredPerSecond: rate,
    outstandingMax: openLoopOutstandingMax,
    channels: pool.channels,
  });
}

// --- two-phase -----------------------------------------------------------------------------

/**
 * An EXPLICIT creditor: reads its inbound stream and accepts what arrives, in
 * RespondToTransfers calls of up to 500 answers, each sent at most 5 ms after
 * its first answer was queued.
 */
class Creditor {
  private waiting: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stream: ClientReadableStream<StreamInboundTransfersResponse> | undefined;
  private closed = false;
  private reconnects = 0;
  private readonly answered = new Set<string>();
  inFlightCalls = 0;

  constructor(
    private readonly pool: ChannelPool,
    readonly bic: string,
    private readonly recorder: Recorder,
    private readonly onFinal: (result: TransferResult) => void,
    private readonly onFailed: (uetr: string, error: unknown) => void,
  ) {}

  open(): void {
    const stream = this.pool.streamInbound(this.bic);
    this.stream = stream;
    stream.on('data', (message: StreamInboundTransfersResponse) => {
      const uetr = message.transfer?.transfer?.uetr;
      if (uetr === undefined) return;
      // A reopened stream sends every pending transfer again; answer each once.
      if (this.answered.has(uetr)) return;
      this.answered.add(uetr);
      this.queue(uetr);
    });
    stream.on('error', (error) => {
      if (this.closed) return;
      this.recorder.callFailed(error, 0);
      if (this.reconnects >= inboundReconnectsMax) {
        this.recorder.problem('INBOUND_STREAM_LOST');
        return;
      }
      this.reconnects += 1;
      setTimeout(() => this.open(), 100);
    });
  }

  private queue(uetr: string): void {
    this.waiting.push(uetr);
    if (this.waiting.length >= respondBatchAnswersMax) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), respondLingerMs);
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.waiting.length > 0) {
      const uetrs = this.waiting.splice(0, respondBatchAnswersMax);
      const answers: TransferAnswer[] = uetrs.map((uetr) => ({ uetr, decision: CreditorDecision.CREDITOR_DECISION_ACCEPT, reasonCode: '' }));
      this.inFlightCalls += 1;
      this.pool.respondToTransfers(this.bic, answers).then(
        (response) => {
          this.inFlightCalls -= 1;
          for (const result of response.results) this.onFinal(result);
        },
        (error: unknown) => {
          this.inFlightCalls -= 1;
          this.recorder.callFailed(error, 0);
          for (const uetr of uetrs) this.onFailed(uetr, error);
        },
      );
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.stream?.cancel();
  }
}

/**
 * `inFlight` loops, each submitting a transfer to a random EXPLICIT creditor
 * (answered RESERVED), then waiting until that creditor's RespondToTransfers
 * comes back SETTLED before sending the next. Latency is the whole two-phase
 * round trip: submit, reserve, inbound stream, answer, settle.
 */
export async function runTwoPhase(
  context: WorkloadContext,
  pool: ChannelPool,
  debtors: readonly string[],
  creditorBics: readonly string[],
  ledger: Ledger,
  reservationTimeoutMs: number,
): Promise<WorkloadResult> {
  const recorder = new Recorder(ledger);
  const { inFlight } = context.options;
  const pending = new Map<string, { resolve: (outcome: TransferResult | Error) => void }>();
  const settleWaitMs = reservationTimeoutMs + 5_000;
  const onFinal = (result: TransferResult) => {
    recorder.settledElsewhere(result);
    pending.get(result.uetr)?.resolve(result);
  };
  const onFailed = (uetr: string, error: unknown) => pending.get(uetr)?.resolve(error instanceof Error ? error : new Error(String(error)));
  const creditors = creditorBics.map((bic) => new Creditor(pool, bic, recorder, onFinal, onFailed));
  for (const c of creditors) c.open();
  const submitLatency = recorder.extra('SubmitTransfer call (RESERVED)');

  let stopped = false;
  const loops: Promise<void>[] = [];
  const loop = async () => {
    while (!stopped) {
      const debtor = debtors[randomIndex(debtors.length)] as string;
      const creditor = creditorBics[randomIndex(creditorBics.length)] as string;
      const transfer = context.factory.make(debtor, creditor);
      let timer: NodeJS.Timeout | undefined;
      const final = new Promise<TransferResult | Error | 'timeout'>((resolve) => {
        pending.set(transfer.uetr, { resolve });
        timer = setTimeout(() => resolve('timeout'), settleWaitMs);
      });
      const startedMs = performance.now();
      try {
        const response = await pool.submitTransfer(transfer);
        recorder.recordLatency(performance.now() - startedMs, submitLatency);
        const result = response.result;
        // The debtor's answer is RESERVED; it goes to the ledger but is not the outcome.
        if (result !== undefined) ledger.result(result);
        if (result?.status !== TransferStatus.TRANSFER_STATUS_RESERVED) {
          recorder.problem(`SUBMIT_NOT_RESERVED`);
          continue;
        }
        const outcome = await final;
        if (outcome === 'timeout') recorder.problem('NOT_SETTLED_IN_TIME');
        else if (outcome instanceof Error) recorder.problem('ANSWER_FAILED');
        else {
          // Counted for the figures once here (the ledger already has it from the creditor).
          recorder.callSucceeded([], performance.now() - startedMs);
          recorder.count(`final ${outcome.status === TransferStatus.TRANSFER_STATUS_SETTLED ? 'SETTLED' : `${TransferStatus[outcome.status]} ${outcome.reasonCode}`}`);
        }
      } catch (error) {
        recorder.callFailed(error, 1);
        await sleep(errorBackoffMs);
      } finally {
        clearTimeout(timer);
        pending.delete(transfer.uetr);
      }
    }
  };
  let cpu: Record<CpuGroup, number>;
  try {
    cpu = await measure(context, 'two-phase', recorder, {
      start() {
        for (let i = 0; i < inFlight; i++) loops.push(loop());
      },
      async stop() {
        stopped = true;
        await Promise.all(loops);
        while (creditors.some((c) => c.inFlightCalls > 0)) await sleep(5);
      },
    });
  } finally {
    for (const c of creditors) c.close();
  }
  return resultOf('two-phase', 'node', 'submit → RESERVED → inbound → accept → SETTLED', recorder, cpu, {
    inFlight,
    debtors: debtors.length,
    explicitCreditors: creditorBics.length,
    respondBatchAnswersMax,
    respondLingerMs,
  });
}

// --- fan-out -------------------------------------------------------------------------------

/** One StreamConfirmations subscriber: records commit-to-delivery and checks the sequence has no gap. */
class Subscriber {
  received = 0;
  private lastSequence = 0n;
  private stream: ClientReadableStream<StreamConfirmationsResponse> | undefined;
  private closed = false;

  constructor(
    private readonly pool: ChannelPool,
    readonly bic: string,
    private readonly recorder: Recorder,
    private readonly histogram: Histogram,
  ) {}

  open(): void {
    // The fan-out banks are new: after_sequence 0 is the live edge.
    const stream = this.pool.streamConfirmations(this.bic, 0n);
    this.stream = stream;
    stream.on('data', (message: StreamConfirmationsResponse) => {
      const receivedWallMs = Date.now();
      const c = message.confirmation;
      if (c === undefined) return;
      if (c.sequence !== this.lastSequence + 1n) this.recorder.problem(c.sequence <= this.lastSequence ? 'CONFIRMATION_DUPLICATE' : 'CONFIRMATION_GAP');
      this.lastSequence = c.sequence;
      this.received += 1;
      this.recorder.count('deliveries');
      const finalWallMs = c.finalTime?.getTime();
      // Only confirmations of transfers decided inside the window: the warm-up backlog would inflate the figures.
      if (finalWallMs !== undefined && finalWallMs >= this.recorder.measureStartWallMs) {
        this.recorder.recordLatency(receivedWallMs - finalWallMs, this.histogram);
      }
    });
    stream.on('error', (error) => {
      if (this.closed) return;
      this.recorder.callFailed(error, 0);
      this.recorder.problem('CONFIRMATION_STREAM_LOST');
    });
  }

  close(): void {
    this.closed = true;
    this.stream?.cancel();
  }
}

/**
 * `subscribers` confirmation streams spread round-robin over the fan-out
 * banks, while an open loop sends at `fanoutRatePerSecond` between those banks.
 * Latency is commit-to-delivery: when a subscriber received the confirmation
 * minus its `final_time` (same machine, same clock).
 */
export async function runFanout(context: WorkloadContext, pool: ChannelPool, banks: readonly string[], ledger: Ledger): Promise<WorkloadResult> {
  const recorder = new Recorder(ledger);
  const { subscribers: subscriberCount, fanoutRatePerSecond } = context.options;
  const subscribers = Array.from({ length: subscriberCount }, (_, i) => new Subscriber(pool, banks[i % banks.length] as string, recorder, recorder.latency));
  for (const s of subscribers) s.open();
  // Confirmations each bank should receive: one per final transfer it is debtor or creditor of.
  const expected = new Map<string, number>();
  const submitLatency = recorder.extra('SubmitTransfer, from scheduled send');
  const load = openLoop(fanoutRatePerSecond, recorder, async (dueMs) => {
    const [debtor, creditor] = randomPair(banks);
    const transfer = context.factory.make(debtor, creditor);
    try {
      const response = await pool.submitTransfer(transfer);
      const result = response.result;
      // callSucceeded records the main histogram; the submit latency has its own.
      recorder.callSucceeded(resultsOfCall(result), undefined);
      recorder.recordLatency(performance.now() - dueMs, submitLatency);
      if (result !== undefined && !result.replayed && result.status !== TransferStatus.TRANSFER_STATUS_RESERVED) {
        expected.set(debtor, (expected.get(debtor) ?? 0) + 1);
        expected.set(creditor, (expected.get(creditor) ?? 0) + 1);
      }
    } catch (error) {
      recorder.callFailed(error, 1);
    }
  });
  let cpu: Record<CpuGroup, number>;
  let missing = 0;
  try {
    cpu = await measure(context, 'fanout', recorder, load);
    const deadline = Date.now() + fanoutDrainTimeoutMs;
    const short = () => subscribers.reduce((sum, s) => sum + Math.max(0, (expected.get(s.bic) ?? 0) - s.received), 0);
    while (short() > 0 && Date.now() < deadline) await sleep(20);
    missing = short();
    if (missing > 0) recorder.problem('CONFIRMATIONS_MISSING', missing);
  } finally {
    for (const s of subscribers) s.close();
  }
  return resultOf('fanout', 'node', 'commit → delivery (final_time to receipt)', recorder, cpu, {
    subscribers: subscriberCount,
    subscribedBanks: new Set(subscribers.map((s) => s.bic)).size,
    offeredPerSecond: fanoutRatePerSecond,
    confirmationsMissingAfterDrain: missing,
    channels: pool.channels,
  });
}
