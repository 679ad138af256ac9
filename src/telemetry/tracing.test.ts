import { describe, expect, test } from 'vitest';
import { currentTraceId, freshTraceId } from './tracing.js';

describe('trace ids of calls without a traced parent', () => {
  test('fresh ids are valid W3C trace ids, all different, across refills of the pool', () => {
    const ids = Array.from({ length: 1_000 }, () => freshTraceId()); // the pool holds 256: three refills at least
    for (const id of ids) expect(id).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
    expect(new Set(ids).size).toBe(ids.length);
  });

  test("the bank's traceparent wins; a malformed or all-zero one gets a fresh id", () => {
    const bank = '4bf92f3577b34da6a3ce929d0e0e4736';
    expect(currentTraceId(`00-${bank}-00f067aa0ba902b7-01`)).toBe(bank);
    for (const traceparent of [undefined, 'garbage', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`]) {
      const id = currentTraceId(traceparent);
      expect(id).toMatch(/^[0-9a-f]{32}$/);
      expect(id).not.toBe(bank);
      expect(id).not.toBe('0'.repeat(32));
    }
  });
});
