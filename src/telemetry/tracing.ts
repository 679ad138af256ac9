// Small tracing helpers for the adapters (OpenTelemetry API only: a no-op
// when no SDK is registered).
import { randomFillSync } from 'node:crypto';
import { isSpanContextValid, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api';

const tracer = trace.getTracer('clearing-node');

/** Runs `fn` in a child span named `name`; the span records failure. */
export async function inSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T> | T): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn();
    } catch (error) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as { reason?: string }).reason ?? 'error' });
      throw error;
    } finally {
      span.end();
    }
  });
}

/**
 * The W3C trace id of the current call: the active span's (which continues the
 * bank's `traceparent` when it sent one), else the `traceparent` value itself
 * when nothing is traced, else a fresh random one.
 */
export function currentTraceId(traceparent: string | undefined): string {
  const active = trace.getActiveSpan()?.spanContext();
  if (active !== undefined && isSpanContextValid(active)) return active.traceId;
  const match = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec((traceparent ?? '').trim());
  if (match !== null && !/^0+$/.test(match[1] as string)) return match[1] as string;
  return freshTraceId();
}

/** Trace ids drawn per refill of the random pool below. */
const traceIdsPerRefill = 256;
const traceIdBytes = 16;
const traceIdPool = Buffer.alloc(traceIdsPerRefill * traceIdBytes);
let traceIdPoolOffset = traceIdPool.length;
const invalidTraceId = '0'.repeat(traceIdBytes * 2);

/**
 * A random W3C trace id. Drawn from a pool refilled 4 kB at a time: one
 * randomBytes(16) per call was ~5 % of the node's CPU in the unary benchmark
 * (every bench call comes without a traceparent). An all-zero id is invalid
 * in W3C trace context, so it is drawn again (2^-128: in practice never).
 */
export function freshTraceId(): string {
  for (;;) {
    if (traceIdPoolOffset + traceIdBytes > traceIdPool.length) {
      randomFillSync(traceIdPool);
      traceIdPoolOffset = 0;
    }
    const id = traceIdPool.toString('hex', traceIdPoolOffset, traceIdPoolOffset + traceIdBytes);
    traceIdPoolOffset += traceIdBytes;
    if (id !== invalidTraceId) return id;
  }
}

/** The trace and span ids of the active span, for log lines. */
export function activeTraceFields(): { trace_id?: string; span_id?: string } {
  const active = trace.getActiveSpan()?.spanContext();
  if (active === undefined || !isSpanContextValid(active)) return {};
  return { trace_id: active.traceId, span_id: active.spanId };
}
