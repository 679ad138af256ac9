// Small tracing helpers for the adapters (OpenTelemetry API only: a no-op
// when no SDK is registered).
import { randomFillSync } from 'node:crypto';
import { isSpanContextValid, ProxyTracerProvider, SpanStatusCode, trace, type Attributes } from '@opentelemetry/api';

const tracerName = 'clearing-node';
const tracer = trace.getTracer(tracerName);

/**
 * True while no tracer provider is registered (startTelemetry registers none
 * when no span is exported): every span would be a no-op. The API's no-op
 * tracer still builds a span and a context for each, ~1.3 kB per unary call
 * in an allocation profile of the benchmark, for nothing; the hot paths ask
 * this first.
 */
export function tracingOff(): boolean {
  const provider = trace.getTracerProvider();
  return provider instanceof ProxyTracerProvider && provider.getDelegateTracer(tracerName) === undefined;
}

/** Runs `fn` in a child span named `name`; the span records failure. */
export async function inSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T> | T): Promise<T> {
  if (tracingOff()) return fn();
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
