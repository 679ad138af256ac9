// Small tracing helpers for the adapters (OpenTelemetry API only: a no-op
// when no SDK is registered).
import { randomBytes } from 'node:crypto';
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
  return randomBytes(16).toString('hex');
}

/** The trace and span ids of the active span, for log lines. */
export function activeTraceFields(): { trace_id?: string; span_id?: string } {
  const active = trace.getActiveSpan()?.spanContext();
  if (active === undefined || !isSpanContextValid(active)) return {};
  return { trace_id: active.traceId, span_id: active.spanId };
}
