import { afterEach, describe, expect, test } from 'vitest';
import { context, createContextKey, ROOT_CONTEXT } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { startTelemetry, type Telemetry } from './sdk.js';

const key = createContextKey('sdk.test');
let telemetry: Telemetry | undefined;

afterEach(async () => {
  await telemetry?.shutdown();
  telemetry = undefined;
  context.disable();
});

/** The context seen after an await inside `context.with`: what async work of a call inherits. */
async function contextAfterAwait() {
  return context.with(ROOT_CONTEXT.setValue(key, 'call'), async () => {
    await new Promise((resolve) => setImmediate(resolve));
    return context.active().getValue(key);
  });
}

describe('trace context propagation', () => {
  test('follows async work when spans are exported', async () => {
    telemetry = await startTelemetry({ serviceVersion: 'test', instanceId: 'test', metricsAddress: '', spanProcessors: [new SimpleSpanProcessor(new InMemorySpanExporter())] }, {});
    expect(await contextAfterAwait()).toBe('call');
  });

  test('is off when nothing is exported: no context manager, no promise hooks on every call', async () => {
    telemetry = await startTelemetry({ serviceVersion: 'test', instanceId: 'test', metricsAddress: '' }, {});
    expect(await contextAfterAwait()).toBeUndefined();
  });
});
