// Load-generation building blocks: a pool of gRPC channels with the generated
// client, credit transfers that pass validation, latency recording in HDR
// histograms, and the ledger of outcomes that the end-of-run check compares
// with the database.
import { randomUUID } from 'node:crypto';
import { credentials, Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { build, type Histogram } from 'hdr-histogram-js';
import {
  ClearingServiceClient,
  type StreamConfirmationsResponse,
  type StreamInboundTransfersResponse,
  type SubmitTransferResponse,
  type SubmitTransfersResponse,
  type RespondToTransfersResponse,
  type TransferAnswer,
} from '../../src/gen/clearing/v1/clearing_service.js';
import { TransferStatus, type CreditTransfer, type TransferResult } from '../../src/gen/clearing/v1/transfer.js';

// --- channels ----------------------------------------------------------------------------

/** Batch answers of up to 8,190 results exceed grpc-js's 4 MiB default receive limit. */
const clientReceiveBytesMax = 64 * 1024 * 1024;

function principal(bic: string): Metadata {
  const metadata = new Metadata();
  metadata.set('x-principal', `participant/${bic}`);
  return metadata;
}

/**
 * Calls spread round-robin over `channels` clients. grpc-js shares one
 * connection between clients of the same target and options through its
 * global subchannel pool; a local pool per client gives each its own HTTP/2
 * connection.
 */
export class ChannelPool {
  private readonly clients: ClearingServiceClient[];
  private next = 0;

  constructor(
    readonly address: string,
    readonly channels: number,
  ) {
    if (!(channels >= 1)) throw new Error(`channels must be at least 1, got ${channels}`);
    this.clients = Array.from(
      { length: channels },
      () =>
        new ClearingServiceClient(address, credentials.createInsecure(), {
          'grpc.use_local_subchannel_pool': 1,
          'grpc.max_receive_message_length': clientReceiveBytesMax,
        }),
    );
  }

  private pick(): ClearingServiceClient {
    const client = this.clients[this.next] as ClearingServiceClient;
    this.next = (this.next + 1) % this.clients.length;
    return client;
  }

  submitTransfer(transfer: CreditTransfer, waitForFinal = false): Promise<SubmitTransferResponse> {
    return new Promise((resolve, reject) => {
      this.pick().submitTransfer({ transfer, waitForFinal }, principal(transfer.debtorAgent), {}, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  }

  submitTransfers(debtorBic: string, transfers: CreditTransfer[]): Promise<SubmitTransfersResponse> {
    return new Promise((resolve, reject) => {
      this.pick().submitTransfers({ transfers, waitForFinal: false }, principal(debtorBic), {}, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  }

  respondToTransfers(creditorBic: string, answers: TransferAnswer[]): Promise<RespondToTransfersResponse> {
    return new Promise((resolve, reject) => {
      this.pick().respondToTransfers({ answers }, principal(creditorBic), {}, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }

  streamInbound(creditorBic: string): ClientReadableStream<StreamInboundTransfersResponse> {
    return this.pick().streamInboundTransfers({}, principal(creditorBic));
  }

  streamConfirmations(bic: string, afterSequence: bigint): ClientReadableStream<StreamConfirmationsResponse> {
    return this.pick().streamConfirmations({ afterSequence }, principal(bic));
  }

  close(): void {
    for (const client of this.clients) client.close();
  }
}

// --- transfers ---------------------------------------------------------------------------

/** Valid IBANs (checksums verified by the node). */
const debtorIban = 'DE89370400440532013000';
const creditorIban = 'FR1420041010050500013M02606';
/** Amounts are 1 to this many minor units: far below any bank's liquidity, so no AM04. */
const amountMinorMax = 100_000;

/**
 * Credit transfers with unique instruction ids (a per-run tag and a counter,
 * at most 35 characters) and a random UUIDv4 UETR.
 */
export class TransferFactory {
  private counter = 0;
  private readonly tag = `b${Date.now().toString(36)}`;

  make(debtorAgent: string, creditorAgent: string): CreditTransfer {
    this.counter += 1;
    const instructionId = `${this.tag}-${this.counter.toString(36)}`;
    return {
      instructionId,
      endToEndId: instructionId,
      uetr: randomUUID(),
      debtorAgent,
      creditorAgent,
      intermediaryAgent: '',
      amount: { currency: 'EUR', amountMinor: BigInt(1 + Math.floor(Math.random() * amountMinorMax)) },
      debtor: { name: 'Erika Mustermann', iban: debtorIban },
      creditor: { name: 'Jean Dupont', iban: creditorIban },
      remittanceInformation: 'benchmark',
      paymentRequestId: '',
    };
  }
}

/** A random index in [0, count). */
export function randomIndex(count: number): number {
  return Math.floor(Math.random() * count);
}

/** A random debtor and a different random creditor from `banks`. */
export function randomPair(banks: readonly string[]): [string, string] {
  const debtor = randomIndex(banks.length);
  let creditor = randomIndex(banks.length - 1);
  if (creditor >= debtor) creditor += 1;
  return [banks[debtor] as string, banks[creditor] as string];
}

// --- outcomes ----------------------------------------------------------------------------

export function statusName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

export function transferStatusName(s: TransferStatus): string {
  return TransferStatus[s]?.replace('TRANSFER_STATUS_', '') ?? `STATUS_${s}`;
}

/**
 * Codes after which the node may or may not have committed the transfer: the
 * client cannot tell, so a mismatch with the database is expected if any occur.
 */
const ambiguousCodes = new Set<number>([status.CANCELLED, status.UNKNOWN, status.DEADLINE_EXCEEDED, status.INTERNAL, status.UNAVAILABLE]);

/**
 * Every outcome the clients saw from the node, across all workloads: the
 * count of SETTLED results must equal the database's SETTLED transfers.
 */
export class Ledger {
  readonly byStatus = new Map<string, number>();
  replayed = 0;
  readonly errors = new Map<string, number>();
  readonly ambiguousErrors = new Map<string, number>();

  constructor(readonly counts: boolean) {}

  get settled(): number {
    return this.byStatus.get('SETTLED') ?? 0;
  }

  result(result: TransferResult): void {
    if (!this.counts) return;
    if (result.replayed) {
      this.replayed += 1;
      return;
    }
    const name = transferStatusName(result.status);
    this.byStatus.set(name, (this.byStatus.get(name) ?? 0) + 1);
  }

  error(error: ServiceError, transfers: number): void {
    if (!this.counts) return;
    const name = statusName(error.code);
    this.errors.set(name, (this.errors.get(name) ?? 0) + transfers);
    if (ambiguousCodes.has(error.code)) this.ambiguousErrors.set(name, (this.ambiguousErrors.get(name) ?? 0) + transfers);
  }
}

/** The ledger of a ceiling run: the no-op server stores nothing, so nothing is counted. */
export const uncountedLedger = new Ledger(false);

// --- latency -----------------------------------------------------------------------------

/** Latencies are recorded in microseconds, up to an hour, to three significant digits. */
export function latencyHistogram(): Histogram {
  return build({ bitBucketSize: 32, lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

function ms(microseconds: number): number {
  return Math.round(microseconds / 10) / 100;
}

export function summarize(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  // A percentile is reported as the top of its bucket, which can lie a hair above the largest value recorded.
  const at = (percentile: number) => ms(Math.min(h.getValueAtPercentile(percentile), h.maxValue));
  return { count: h.totalCount, p50: at(50), p90: at(90), p99: at(99), p999: at(99.9), max: ms(h.maxValue), mean: ms(h.mean) };
}

/**
 * What one workload measured. Only what completes between beginMeasuring()
 * and endMeasuring() counts; the warm-up before and the drain after still go
 * to the ledger (the database has them) but not into the figures.
 */
export class Recorder {
  readonly latency = latencyHistogram();
  /** Further histograms a workload keeps (e.g. the submit call under fan-out). */
  readonly extraLatency = new Map<string, Histogram>();
  measuring = false;
  otherCoresBefore = 0;
  /** Seconds from the load's start to the measured window (the warm-up, and for open loops the wait for its backlog to drain). */
  warmupSeconds = 0;
  /** Open loops: whether the warm-up's backlog had drained when the window began (undefined: not an open loop). */
  backlogDrained: boolean | undefined;
  measureStartMs = 0;
  measureEndMs = 0;
  /** Wall-clock start of measuring, for comparisons with server timestamps. */
  measureStartWallMs = 0;
  calls = 0;
  settled = 0;
  /** Transfers carried by the counted calls (batch: calls × batch size). */
  transfers = 0;
  readonly errors = new Map<string, number>();
  readonly rejected = new Map<string, number>();
  readonly statuses = new Map<string, number>();
  readonly counters = new Map<string, number>();
  // For the progress line: totals including warm-up.
  progressCalls = 0;
  progressSettled = 0;
  progressErrors = 0;

  constructor(readonly ledger: Ledger) {}

  beginMeasuring(): void {
    this.measuring = true;
    this.measureStartMs = performance.now();
    this.measureStartWallMs = Date.now();
  }

  endMeasuring(): void {
    this.measuring = false;
    this.measureEndMs = performance.now();
  }

  get measuredSeconds(): number {
    return (this.measureEndMs - this.measureStartMs) / 1000;
  }

  /** Latency in milliseconds (fractional), recorded as microseconds. */
  recordLatency(latencyMs: number, histogram: Histogram = this.latency): void {
    if (!this.measuring) return;
    histogram.recordValue(Math.max(1, Math.round(latencyMs * 1000)));
  }

  extra(name: string): Histogram {
    let h = this.extraLatency.get(name);
    if (h === undefined) {
      h = latencyHistogram();
      this.extraLatency.set(name, h);
    }
    return h;
  }

  count(name: string, by = 1): void {
    if (!this.measuring) return;
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  /** One call answered; its results are counted (and go to the ledger) whether measuring or not. */
  callSucceeded(results: readonly TransferResult[], latencyMs: number | undefined): void {
    this.progressCalls += 1;
    let settled = 0;
    for (const r of results) {
      this.ledger.result(r);
      if (r.status === TransferStatus.TRANSFER_STATUS_SETTLED && !r.replayed) settled += 1;
    }
    this.progressSettled += settled;
    if (!this.measuring) return;
    this.calls += 1;
    this.transfers += results.length;
    this.settled += settled;
    for (const r of results) {
      const name = transferStatusName(r.status);
      this.statuses.set(name, (this.statuses.get(name) ?? 0) + 1);
      if (r.status === TransferStatus.TRANSFER_STATUS_REJECTED || r.status === TransferStatus.TRANSFER_STATUS_EXPIRED) {
        this.rejected.set(r.reasonCode, (this.rejected.get(r.reasonCode) ?? 0) + 1);
      }
    }
    if (latencyMs !== undefined) this.recordLatency(latencyMs);
  }

  /** Settlements seen outside a call's own answer (two-phase: the creditor's RespondToTransfers). */
  settledElsewhere(result: TransferResult): void {
    this.ledger.result(result);
    if (result.status !== TransferStatus.TRANSFER_STATUS_SETTLED || result.replayed) return;
    this.progressSettled += 1;
    if (this.measuring) this.settled += 1;
  }

  callFailed(error: unknown, transfers: number): void {
    this.progressErrors += 1;
    const e = error as ServiceError;
    const name = typeof e?.code === 'number' ? statusName(e.code) : `CLIENT_ERROR(${error instanceof Error ? error.message : String(error)})`;
    if (typeof e?.code === 'number') this.ledger.error(e, transfers);
    if (!this.measuring) return;
    this.errors.set(name, (this.errors.get(name) ?? 0) + 1);
  }

  /** A failure that is not a call's (e.g. a stream gap); always counted. */
  problem(name: string, count = 1): void {
    this.progressErrors += count;
    this.errors.set(name, (this.errors.get(name) ?? 0) + count);
  }
}
