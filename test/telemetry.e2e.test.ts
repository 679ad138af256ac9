// Tracing, metrics and logs: an operator takes a UETR and follows the payment —
// the bank's trace continues through the server span, the clearing stages and
// every SQL statement; the batch that settled it links back; /metrics moves;
// nothing personal reaches a span or a log line.
//
// The SDK is started before the node's modules load (as main.ts does), so the
// gRPC and pg instrumentations patch them.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { context, SpanKind, trace, TraceFlags } from '@opentelemetry/api';
import { startTelemetry, type Telemetry } from '../src/telemetry/sdk.js';
// Nothing that loads @grpc/grpc-js or pg may be imported statically here.

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
const logLines: string[] = [];
// Loaded after the SDK started: see the file comment.
let support: {
  node: typeof import('./support/node.js');
  fixtures: typeof import('./support/fixtures.js');
  clients: typeof import('./support/clients.js');
  processes: typeof import('./support/process.js');
  database: typeof import('./support/database.js');
  grpc: typeof import('@grpc/grpc-js');
};
let t: import('./support/node.js').TestNode;

beforeAll(async () => {
  telemetry = await startTelemetry({
    serviceVersion: 'test',
    instanceId: 'telemetry-test',
    metricsAddress: '127.0.0.1:0',
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  support = {
    node: await import('./support/node.js'),
    fixtures: await import('./support/fixtures.js'),
    clients: await import('./support/clients.js'),
    processes: await import('./support/process.js'),
    database: await import('./support/database.js'),
    grpc: await import('@grpc/grpc-js'),
  };
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logLines.push(...String(chunk).split('\n').filter((l) => l !== ''));
      done();
    },
  });
  t = await support.node.startTestNode({ CLEARING_LOG_LEVEL: 'debug' }, undefined, { write: (line: string) => sink.write(line) });
  await support.fixtures.createBank(t.operator, 'TRCADEFFXXX', 1_000_000n);
  await support.fixtures.createBank(t.operator, 'TRCBFRPPXXX');
});
afterAll(async () => {
  await t?.stop();
  await support?.processes.stopAllNodeProcesses();
  await telemetry?.shutdown();
});

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/**
 * Submits as a bank whose own tracing started trace `traceId`: the call runs in
 * that trace's context, so the instrumented client sends it as `traceparent`.
 */
async function submitTraced(traceId: string, amountMinor: bigint) {
  const request = support.fixtures.transfer('TRCADEFFXXX', 'TRCBFRPPXXX', amountMinor);
  const client = t.participant('TRCADEFFXXX');
  const bankContext = trace.setSpanContext(context.active(), { traceId, spanId: hex(8), traceFlags: TraceFlags.SAMPLED, isRemote: true });
  await context.with(bankContext, () => client.submitTransfer({ transfer: request, waitForFinal: false }));
  return request;
}

const spans = () => exporter.getFinishedSpans();
const inTrace = (traceId: string) => spans().filter((s) => s.spanContext().traceId === traceId);

async function eventually<T>(read: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('a transfer\'s trace', () => {
  test('continues the bank\'s trace: server span, clearing stages, and the batch links to it', async () => {
    const traceId = hex(16);
    const request = await submitTraced(traceId, 1_000n);
    const server = await eventually(() => inTrace(traceId).find((s) => s.kind === SpanKind.SERVER));
    expect(server.name).toBe('grpc.clearing.v1.ClearingService/SubmitTransfer');

    const mine = inTrace(traceId);
    const names = mine.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['clearing.validate', 'clearing.queue_wait', 'clearing.settle']));
    const settle = mine.find((s) => s.name === 'clearing.settle') as ReadableSpan;
    expect(settle.attributes).toMatchObject({
      'clearing.uetr': request.uetr,
      'clearing.instruction_id': request.instructionId,
      'clearing.debtor_agent': 'TRCADEFFXXX',
      'clearing.creditor_agent': 'TRCBFRPPXXX',
      'clearing.status': 'SETTLED',
    });
    const batchId = settle.attributes['clearing.batch.id'];
    expect(typeof batchId).toBe('string');

    // The batch is a trace of its own, linked to this transfer's call, holding the SQL.
    const batch = spans().find((s) => s.name === 'clearing.batch' && s.attributes['clearing.batch.id'] === batchId) as ReadableSpan;
    expect(batch).toBeDefined();
    expect(batch.links.map((l) => l.context.traceId)).toContain(traceId);
    expect(settle.links.map((l) => l.context.spanId)).toContain(batch.spanContext().spanId);
    const sql = spans().filter((s) => s.spanContext().traceId === batch.spanContext().traceId && s.kind === SpanKind.CLIENT && s.name.startsWith('pg.query'));
    expect(sql.map((s) => s.name)).toEqual(
      expect.arrayContaining(['pg.query:BEGIN', 'pg.query:settlement_lock_participants', 'pg.query:settlement_read_snapshot', 'pg.query:settlement_write_batch', 'pg.query:COMMIT'].map((n) => expect.stringContaining(n.replace('pg.query:', '')))),
    );
    // The statements of the batch are children of its span.
    for (const s of sql) expect(s.parentSpanContext?.spanId).toBe(batch.spanContext().spanId);
  });

  test('InspectTransfer returns the lifecycle and the trace id the bank started', async () => {
    const traceId = hex(16);
    const request = await submitTraced(traceId, 10n);
    const inspected = await t.operator.inspectTransfer({ uetr: request.uetr });
    expect(inspected.traceId).toBe(traceId);
    expect(inspected.batchId).toBeGreaterThan(0n);
    expect(inspected.events.map((e) => e.kind)).toEqual(['RECEIVED', 'SETTLED']);
    // Confirmations delivered on a stream show up in the lifecycle.
    const payee = t.participant('TRCBFRPPXXX');
    const stream = payee.raw.streamConfirmations({ afterSequence: 0n }, payee.metadata());
    stream.on('error', () => {}); // cancelled below
    await new Promise<void>((resolve) => stream.on('data', (m: { confirmation?: { uetr: string } }) => m.confirmation?.uetr === request.uetr && resolve()));
    stream.cancel();
    // Delivery is recorded just after the write, asynchronously.
    let later = await t.operator.inspectTransfer({ uetr: request.uetr });
    for (let i = 0; i < 50 && !later.events.some((e) => e.kind === 'CONFIRMATION_DELIVERED'); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      later = await t.operator.inspectTransfer({ uetr: request.uetr });
    }
    expect(later.events.find((e) => e.kind === 'CONFIRMATION_DELIVERED')?.bic).toBe('TRCBFRPPXXX');
    expect(inTrace(traceId).length).toBeGreaterThan(0);
  });

  test('the confirmation carries the trace id too', async () => {
    const traceId = hex(16);
    const request = await submitTraced(traceId, 11n);
    const page = await t.participant('TRCADEFFXXX').listConfirmations({ afterSequence: 0n, pageSize: 1000, pageToken: '' });
    expect(page.confirmations.find((c) => c.uetr === request.uetr)?.traceId).toBe(traceId);
  });
});

describe('no personal data', () => {
  test('no span attribute or event and no log line contains an IBAN or a name', async () => {
    // A failure path too: a rejection and a malformed request.
    await submitTraced(hex(16), 10_000_000_000n).catch(() => undefined);
    await support.clients.failure(
      t.participant('TRCADEFFXXX').submitTransfer({ transfer: support.fixtures.transfer('TRCADEFFXXX', 'TRCBFRPPXXX', 1n, { uetr: 'bad' }), waitForFinal: false }),
    );
    const { ibans, names } = support.fixtures;
    const secrets = [ibans.debtor, ibans.creditor, names.debtor, names.creditor];
    const everything = JSON.stringify(spans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })));
    for (const secret of secrets) expect(everything).not.toContain(secret);
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) for (const secret of secrets) expect(line).not.toContain(secret);
    // Log lines written inside a span carry its ids.
    expect(logLines.some((l) => /"trace_id":"[0-9a-f]{32}"/.test(l) && l.includes('settlement batch committed'))).toBe(true);
  });
});

describe('metrics', () => {
  /** Fetches /metrics and checks every line against the Prometheus text format. */
  async function scrape(): Promise<Map<string, number>> {
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: telemetry.metricsPort, path: '/metrics' }, (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () => resolve(text));
        })
        .on('error', reject);
    });
    const samples = new Map<string, number>();
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?\d+)?$/;
    for (const line of body.split('\n')) {
      if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
        expect(line, `bad comment line: ${line}`).toMatch(/^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$/);
        continue;
      }
      // Any other line starting with # is a comment the format allows.
      if (line === '' || line.startsWith('#')) continue;
      const match = sample.exec(line);
      expect(match, `not Prometheus text: ${line}`).not.toBeNull();
      samples.set(`${match?.[1]}${match?.[2] ?? ''}`, Number(match?.[3]));
    }
    return samples;
  }

  const has = (samples: Map<string, number>, prefix: string) => [...samples.keys()].some((key) => key.startsWith(prefix));
  const find = (samples: Map<string, number>, prefix: string, ...parts: string[]) =>
    [...samples.entries()].filter(([key]) => key.startsWith(prefix) && parts.every((p) => key.includes(p))).reduce((sum, [, v]) => sum + v, 0);

  test('/metrics parses and the counters move with traffic', async () => {
    const before = await scrape();
    for (let i = 0; i < 5; i++) await submitTraced(hex(16), 3n);
    await submitTraced(hex(16), 10_000_000_000n); // AM04
    const after = await scrape();
    const settled = (s: Map<string, number>) => find(s, 'clearing_transfers_total', 'clearing_status="SETTLED"');
    const am04 = (s: Map<string, number>) => find(s, 'clearing_transfers_total', 'clearing_reason_code="AM04"');
    expect(settled(after) - settled(before)).toBe(5);
    expect(am04(after) - am04(before)).toBe(1);
    expect(find(after, 'clearing_batch_operations_count')).toBeGreaterThan(find(before, 'clearing_batch_operations_count'));
    expect(find(after, 'clearing_transfer_duration_count')).toBeGreaterThan(0);
    expect(find(after, 'clearing_participant_transfers_total', 'clearing_bic="TRCADEFFXXX"', 'clearing_role="DEBTOR"')).toBeGreaterThan(0);
    expect(has(after, 'clearing_queue_depth')).toBe(true);
    expect(has(after, 'clearing_reservations_pending')).toBe(true);
  });

  test("/metrics carries the process's runtime: event loop, garbage collector, heap", async () => {
    for (let i = 0; i < 3; i++) await submitTraced(hex(16), 3n);
    // The delay series appear once the histogram holds 5 samples of its 5 ms
    // timer since the previous scrape (the test before this one scraped).
    await new Promise((resolve) => setTimeout(resolve, 60));
    const samples = await scrape();
    expect(has(samples, 'nodejs_eventloop_utilization')).toBe(true);
    expect(has(samples, 'nodejs_eventloop_delay_p99')).toBe(true);
    expect(has(samples, 'nodejs_eventloop_delay_max')).toBe(true);
    // The node allocated enough since start for the young generation to be collected.
    expect(find(samples, 'v8js_gc_duration', '_count')).toBeGreaterThan(0);
    expect(find(samples, 'v8js_memory_heap_used')).toBeGreaterThan(0);
  });
});

describe('OTLP over the wire', () => {
  test('spans reach a real OTLP/HTTP receiver with the resource attributes', async () => {
    const received: { path: string; body: string }[] = [];
    const receiver = http.createServer((request, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk: string) => (body += chunk));
      request.on('end', () => {
        received.push({ path: request.url ?? '', body });
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', () => resolve()));
    const port = (receiver.address() as { port: number }).port;
    const db = await support.database.createBareDatabase();
    try {
      const node = await support.processes.startNodeProcess({
        databaseUrl: db.url,
        name: 'otlp-node',
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
          OTEL_BSP_SCHEDULE_DELAY: '100',
        },
      });
      const operator = support.clients.operatorClient(node.address);
      await support.fixtures.createBank(operator, 'OTLPDEFFXXX', 100n);
      const body = await eventually(() => received.find((r) => r.path === '/v1/traces' && r.body.includes('CreateParticipant'))?.body, 10_000);
      const payload = JSON.parse(body) as { resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] } }[] };
      const attributes = Object.fromEntries(payload.resourceSpans[0]?.resource.attributes.map((a) => [a.key, a.value.stringValue]) ?? []);
      expect(attributes).toMatchObject({ 'service.name': 'clearing-node', 'service.instance.id': 'otlp-node' });
      expect(attributes['service.version']).toMatch(/^\d+\.\d+\.\d+/);
      operator.raw.close();
      await node.stop();
    } finally {
      receiver.close();
      await db.drop();
    }
  }, 60_000);

  test('with nothing to export, a node records no spans but still keeps the bank\'s trace id', async () => {
    const db = await support.database.createBareDatabase();
    try {
      const node = await support.processes.startNodeProcess({ databaseUrl: db.url, name: 'quiet-node' });
      const operator = support.clients.operatorClient(node.address);
      await support.fixtures.createBank(operator, 'QUIEDEFFXXX', 100n);
      await support.fixtures.createBank(operator, 'QUIEFRPPXXX');
      const payer = support.clients.clearingClient(node.address, 'participant/QUIEDEFFXXX');
      const traceId = hex(16);
      const request = support.fixtures.transfer('QUIEDEFFXXX', 'QUIEFRPPXXX', 5n);
      const bankContext = trace.setSpanContext(context.active(), { traceId, spanId: hex(8), traceFlags: TraceFlags.SAMPLED, isRemote: true });
      await context.with(bankContext, () => payer.submitTransfer({ transfer: request, waitForFinal: false }));
      expect((await operator.inspectTransfer({ uetr: request.uetr })).traceId).toBe(traceId);
      // A call without a traceparent gets a trace id of its own.
      const untraced = support.fixtures.transfer('QUIEDEFFXXX', 'QUIEFRPPXXX', 6n);
      await context.with(trace.deleteSpan(context.active()), () => payer.submitTransfer({ transfer: untraced, waitForFinal: false }));
      expect((await operator.inspectTransfer({ uetr: untraced.uetr })).traceId).toMatch(/^[0-9a-f]{32}$/);
      operator.raw.close();
      payer.raw.close();
      await node.stop();
    } finally {
      await db.drop();
    }
  }, 60_000);
});
