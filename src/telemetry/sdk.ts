// OpenTelemetry set-up, started before the gRPC and pg modules load so their
// instrumentations can patch them (see main.ts). Traces go to OTLP/HTTP when
// OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, nowhere
// otherwise (then nothing is instrumented or recorded, and each transfer keeps
// the bank's traceparent trace id, or a fresh one).
// Metrics are served for Prometheus at CLEARING_METRICS_ADDRESS under /metrics.
import http from 'node:http';
import { context, metrics } from '@opentelemetry/api';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { RuntimeNodeInstrumentation } from '@opentelemetry/instrumentation-runtime-node';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { AlwaysOffSampler, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';

/**
 * Resolution of the event-loop delay histogram behind nodejs.eventloop.delay.*
 * (perf_hooks.monitorEventLoopDelay): fine enough for the few-millisecond
 * stalls that make a batch's callers wait, one timer tick per period.
 */
const eventLoopDelayResolutionMs = 5;

/** service.instance.id: not yet in the stable semantic conventions export. */
const attrServiceInstanceId = 'service.instance.id';

export interface TelemetryOptions {
  serviceVersion: string;
  instanceId: string;
  /** host:port for /metrics; port 0 picks a free one. Empty string: no metrics endpoint. */
  metricsAddress: string;
  /** Extra span processors (tests use an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
}

export interface Telemetry {
  /** The /metrics port actually bound (0 when none). */
  metricsPort: number;
  shutdown(): Promise<void>;
}

function otlpTracesConfigured(env: NodeJS.ProcessEnv): boolean {
  if ((env.OTEL_TRACES_EXPORTER ?? '').split(',').includes('none')) return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

export async function startTelemetry(options: TelemetryOptions, env: NodeJS.ProcessEnv = process.env): Promise<Telemetry> {
  const spanProcessors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
  if (otlpTracesConfigured(env)) spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter()));

  const prometheus = new PrometheusExporter({ preventServerStart: true });
  // With nowhere to send spans, record none: spans still get ids (so every
  // transfer keeps its trace id, and a bank's traceparent is continued), but
  // building attributes and timings for nobody costs CPU on the hot path.
  const exporting = spanProcessors.length > 0;
  const sampler = exporting ? {} : { sampler: new AlwaysOffSampler() };
  // The process's own saturation, always: event-loop utilization and delay,
  // garbage-collection pauses, heap use (nodejs.* and v8js.* metrics). When
  // the loop is busy or paused, every call waiting for a batch waits longer;
  // the benchmark's open-loop tail was found there (docs/benchmarks.md).
  const runtime = new RuntimeNodeInstrumentation({ monitoringPrecision: eventLoopDelayResolutionMs });
  const sdk = new NodeSDK({
    ...sampler,
    serviceName: env.OTEL_SERVICE_NAME ?? 'clearing-node',
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME ?? 'clearing-node',
      [ATTR_SERVICE_VERSION]: options.serviceVersion,
      [attrServiceInstanceId]: options.instanceId,
    }),
    // Explicit, so the SDK does not fall back to exporting to a default OTLP endpoint.
    spanProcessors,
    logRecordProcessors: [],
    metricReaders: [prometheus],
    instrumentations: [
      runtime,
      // Without an exporter the instrumentations' wrapping and context hand-offs
      // were a fifth of a unary call's CPU for spans nobody sees; the bank's
      // traceparent is then read from the metadata directly (tracing.ts).
      ...(exporting
        ? [
            new GrpcInstrumentation(),
            // Statement text is parameterised SQL; values (names, IBANs) are never recorded.
            new PgInstrumentation({ enhancedDatabaseReporting: false, requireParentSpan: true }),
          ]
        : []),
    ],
  });
  sdk.start();
  // With no span recorded, there is no trace context to carry across awaits
  // (a transfer's trace id is the bank's traceparent, read from the metadata).
  // The SDK's default context manager is AsyncLocalStorage, whose promise hooks
  // run on every promise the node makes: 2-3 % of its busy time in the
  // benchmark profiles (async_hooks functions, gone with this).
  if (!exporting) context.disable();

  let server: http.Server | undefined;
  let metricsPort = 0;
  if (options.metricsAddress !== '') {
    const index = options.metricsAddress.lastIndexOf(':');
    const host = options.metricsAddress.slice(0, index);
    const port = Number(options.metricsAddress.slice(index + 1));
    server = http.createServer((request, response) => {
      if (request.method === 'GET' && request.url?.split('?')[0] === '/metrics') {
        prometheus.getMetricsRequestHandler(request, response);
        return;
      }
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
    });
    metricsPort = await new Promise<number>((resolve, reject) => {
      server?.once('error', reject);
      server?.listen(port, host, () => {
        const address = server?.address();
        resolve(typeof address === 'object' && address !== null ? address.port : port);
      });
    });
  }

  return {
    metricsPort,
    async shutdown() {
      await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
      // NodeSDK's shutdown ends its providers but leaves instrumentations on:
      // the runtime one would keep its delay timer and GC observer.
      runtime.disable();
      await sdk.shutdown();
      // Unregistered, so telemetry started again in this process (tests) can
      // register its own meter provider instead of meeting this shut-down one.
      metrics.disable();
    },
  };
}
