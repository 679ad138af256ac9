// Tracing and metrics around the settlement engine, as an EngineObserver: the
// engine calls these hooks; nothing in the domain knows about OpenTelemetry.
//
// Per operation (in the submitting call's trace):
//   clearing.queue_wait   enqueue → its batch starts
//   clearing.<stage>      batch start → commit, stage = settle | reserve | reject | expire | liquidity,
//                         linked to the batch span, carrying the batch id
// Per batch (a trace of its own, linked to every operation it carries):
//   clearing.batch        the Postgres transaction; the SQL spans are its children
//
// Attributes carry ids (UETR, instruction id, BICs), status and reason code;
// never names or IBANs.
import {
  context,
  INVALID_SPAN_CONTEXT,
  metrics,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
} from '@opentelemetry/api';
import type { BatchObservation, EngineObserver } from '../clearing/engine.js';
import { tracingOff } from './tracing.js';
import type { Operation, OperationOutcome } from '../clearing/batch.js';

const tracer = trace.getTracer('clearing-node');
// Looked up when instruments are created, not at import: unlike tracers, a
// meter taken before the SDK registers its provider stays a no-op for good.
const meter = () => metrics.getMeter('clearing-node');

interface Observed {
  parent: Context;
  queueWait: Span;
  /** Whether the operation's trace is sampled (a span reads false once ended). */
  recording: boolean;
  attributes: Attributes;
}

/** Every operation's observation while no tracer provider is registered: nothing recorded, nothing to end. */
const unobserved: Observed = Object.freeze({
  parent: ROOT_CONTEXT,
  queueWait: trace.wrapSpanContext(INVALID_SPAN_CONTEXT),
  recording: false,
  attributes: Object.freeze({}),
});

/** Span attributes of an operation: identifiers only. */
export function operationAttributes(op: Operation): Attributes {
  switch (op.kind) {
    case 'transfer':
      return {
        'clearing.operation': 'transfer',
        'clearing.uetr': op.transfer.uetr,
        'clearing.instruction_id': op.transfer.instructionId,
        'clearing.debtor_agent': op.transfer.debtorAgent,
        'clearing.creditor_agent': op.transfer.creditorAgent,
        ...(op.transfer.intermediaryAgent === '' ? {} : { 'clearing.intermediary_agent': op.transfer.intermediaryAgent }),
      };
    case 'answer':
    case 'expire':
      return {
        'clearing.operation': op.kind === 'answer' ? `answer_${op.decision.toLowerCase()}` : 'expire',
        'clearing.uetr': op.transfer.uetr,
        'clearing.instruction_id': op.transfer.instructionId,
        'clearing.debtor_agent': op.transfer.debtorAgent,
        'clearing.creditor_agent': op.transfer.creditorAgent,
      };
    default:
      return { 'clearing.operation': op.kind.toLowerCase(), 'clearing.request_id': op.requestId, 'clearing.bic': op.bic };
  }
}

function stageOf(op: Operation, outcome: OperationOutcome): string {
  if (outcome.kind === 'position') return 'liquidity';
  if (outcome.kind === 'error') return 'refuse';
  if (outcome.replayed) return 'replay';
  switch (outcome.transfer.status) {
    case 'RESERVED':
      return 'reserve';
    case 'SETTLED':
      return 'settle';
    case 'EXPIRED':
      return 'expire';
    default:
      return op.kind === 'answer' ? 'reject' : 'reject';
  }
}

/** Histogram buckets in seconds for payment latency: 1 ms … 20 s (the FedNow clock). */
const latencyBucketsSeconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20];

export class ClearingTelemetry implements EngineObserver {
  private readonly transfers = meter().createCounter('clearing.transfers', {
    description: 'Transfers that reached a status (RESERVED, SETTLED, REJECTED, EXPIRED), by reason code',
  });
  private readonly participantTransfers = meter().createCounter('clearing.participant.transfers', {
    description: 'Transfers per participant, role and status',
  });
  private readonly finalLatency = meter().createHistogram('clearing.transfer.duration', {
    description: 'From receipt of a transfer to its final status',
    unit: 's',
    advice: { explicitBucketBoundaries: latencyBucketsSeconds },
  });
  private readonly batchSize = meter().createHistogram('clearing.batch.operations', {
    description: 'Operations per settlement batch',
    advice: { explicitBucketBoundaries: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 8190] },
  });
  private readonly batchDuration = meter().createHistogram('clearing.batch.duration', {
    description: 'Duration of one settlement transaction',
    unit: 's',
    advice: { explicitBucketBoundaries: latencyBucketsSeconds },
  });
  private readonly batchFailures = meter().createCounter('clearing.batch.failures', {
    description: 'Settlement batches that failed for good (callers got UNAVAILABLE)',
  });
  private readonly liquidity = meter().createCounter('clearing.position_operations', {
    description: 'Liquidity transfers and debit cap changes applied',
  });

  queued(operation: Operation): Observed {
    // No tracer provider: one shared, never-recording observation instead of a no-op span per operation.
    if (tracingOff()) return unobserved;
    const parent = context.active();
    const queueWait = tracer.startSpan('clearing.queue_wait', { kind: SpanKind.INTERNAL }, parent);
    // Unsampled (or nothing exporting): no attributes, no stage spans, no links — the hot path stays lean.
    const recording = queueWait.isRecording();
    const attributes = recording ? operationAttributes(operation) : {};
    queueWait.setAttributes(attributes);
    return { parent, queueWait, recording, attributes };
  }

  batch(observedItems: readonly unknown[], attempt: number): BatchObservation {
    const items = observedItems as Observed[];
    if (attempt === 0) for (const o of items) o.queueWait.end();
    const startMs = Date.now();
    const span = tracer.startSpan(
      'clearing.batch',
      {
        kind: SpanKind.INTERNAL,
        root: true,
        attributes: { 'clearing.batch.operations': items.length, 'clearing.batch.attempt': attempt },
        links: items
          .filter((o) => o.recording)
          .map((o) => ({ context: trace.getSpan(o.parent)?.spanContext() ?? o.queueWait.spanContext(), attributes: o.attributes })),
      },
      ROOT_CONTEXT,
    );
    return {
      run: (transaction) => context.with(trace.setSpan(ROOT_CONTEXT, span), transaction),
      committed: (batch) => {
        const batchId = batch.batchId.toString();
        span.setAttribute('clearing.batch.id', batchId);
        span.setAttribute('clearing.batch.path', batch.path);
        span.setAttribute('clearing.batch.stored_read', batch.storedRead);
        span.end();
        this.batchSize.record(batch.operations.length);
        // By path: how many batches were decided ahead of their locks, and how long each kind takes.
        this.batchDuration.record(batch.durationMs / 1000, { 'clearing.batch.path': batch.path });
        const now = Date.now();
        batch.operations.forEach((op, i) => {
          const o = items[i];
          if (o?.recording) this.stage(o, op, batch.outcomes[i] as OperationOutcome, batchId, span, startMs, now);
        });
        this.count(batch.outcomes);
      },
      failed: (error, final) => {
        span.recordException(error as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (error as { code?: string }).code ?? 'error' });
        span.end();
        if (!final) return;
        this.batchFailures.add(1);
        for (const item of items) {
          const s = tracer.startSpan('clearing.settle', { startTime: startMs, attributes: item.attributes }, item.parent);
          s.setStatus({ code: SpanStatusCode.ERROR, message: 'settlement batch failed; nothing applied' });
          s.end();
        }
      },
    };
  }

  /** The operation's stage span in its call's trace: batch start to commit, linked to the batch. */
  private stage(o: Observed, op: Operation, outcome: OperationOutcome, batchId: string, batchSpan: Span, startMs: number, endMs: number): void {
    const attributes: Attributes = { ...o.attributes, 'clearing.batch.id': batchId };
    if (outcome.kind === 'transfer') {
      attributes['clearing.status'] = outcome.transfer.status;
      if (outcome.transfer.reasonCode !== '') attributes['clearing.reason_code'] = outcome.transfer.reasonCode;
      attributes['clearing.replayed'] = outcome.replayed;
    }
    const stageSpan = tracer.startSpan(
      `clearing.${stageOf(op, outcome)}`,
      { kind: SpanKind.INTERNAL, startTime: startMs, attributes, links: [{ context: batchSpan.spanContext() }] },
      o.parent,
    );
    if (outcome.kind === 'error') stageSpan.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error.reason });
    stageSpan.end(endMs);
  }

  abandoned(observed: unknown, outcome: OperationOutcome): void {
    const o = observed as Observed | undefined;
    if (o === undefined) return;
    o.queueWait.setStatus({ code: SpanStatusCode.ERROR, message: outcome.kind === 'error' ? outcome.error.reason : 'abandoned' });
    o.queueWait.end();
  }

  watchQueue(depth: () => number): void {
    meter()
      .createObservableGauge('clearing.queue.depth', { description: 'Operations waiting for the settlement loop' })
      .addCallback((result) => result.observe(depth()));
  }

  /** Counts a batch's outcomes: tallied per attribute set first, one add per set. */
  private count(outcomes: readonly OperationOutcome[]): void {
    const tallies = new Map<string, { counter: 'transfers' | 'participantTransfers'; attributes: Attributes; n: number }>();
    const tally = (counter: 'transfers' | 'participantTransfers', key: string, attributes: () => Attributes) => {
      const found = tallies.get(key);
      if (found !== undefined) found.n++;
      else tallies.set(key, { counter, attributes: attributes(), n: 1 });
    };
    let liquidity = 0;
    for (const outcome of outcomes) {
      if (outcome.kind === 'position') {
        if (!outcome.replayed) liquidity++;
        continue;
      }
      if (outcome.kind !== 'transfer' || outcome.replayed) continue;
      const t = outcome.transfer;
      tally('transfers', `${t.status}/${t.reasonCode}`, () => ({ 'clearing.status': t.status, 'clearing.reason_code': t.reasonCode }));
      tally('participantTransfers', `${t.debtorAgent}/D/${t.status}`, () => ({ 'clearing.bic': t.debtorAgent, 'clearing.role': 'DEBTOR', 'clearing.status': t.status }));
      tally('participantTransfers', `${t.creditorAgent}/C/${t.status}`, () => ({ 'clearing.bic': t.creditorAgent, 'clearing.role': 'CREDITOR', 'clearing.status': t.status }));
      if (t.finalAt !== null) this.finalLatency.record(Math.max(0, t.finalAt.getTime() - t.receivedAt.getTime()) / 1000);
    }
    for (const { counter, attributes, n } of tallies.values()) this[counter].add(n, attributes);
    if (liquidity > 0) this.liquidity.add(liquidity);
  }
}

/** Gauges read from elsewhere: pending reservations (from the database) and stream subscribers. */
export function watchPendingReservations(count: () => Promise<number>): void {
  let cached = 0;
  let readAtMs = 0;
  meter()
    .createObservableGauge('clearing.reservations.pending', { description: 'Transfers RESERVED and waiting for the creditor agent' })
    .addCallback(async (result) => {
      // At most one query per second, however often Prometheus scrapes.
      if (Date.now() - readAtMs > 1_000) {
        readAtMs = Date.now();
        cached = await count().catch(() => cached);
      }
      result.observe(cached);
    });
}

export interface StreamMetrics {
  subscribers: ReturnType<ReturnType<typeof meter>['createUpDownCounter']>;
  delivered: ReturnType<ReturnType<typeof meter>['createCounter']>;
  lag: ReturnType<ReturnType<typeof meter>['createHistogram']>;
}

let streams: StreamMetrics | undefined;

/** Instruments of the server streams, created on first use. */
export function streamMetrics(): StreamMetrics {
  streams ??= {
    subscribers: meter().createUpDownCounter('clearing.stream.subscribers', { description: 'Open server streams, by stream (confirmations, inbound)' }),
    delivered: meter().createCounter('clearing.stream.delivered', { description: 'Messages written to server streams' }),
    lag: meter().createHistogram('clearing.stream.lag', {
      description: "From a transfer's final status to its confirmation being written to a subscriber",
      unit: 's',
      advice: { explicitBucketBoundaries: latencyBucketsSeconds },
    }),
  };
  return streams;
}
