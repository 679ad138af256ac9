import { describe, expect, test } from 'vitest';
import { EventHub } from './hub.js';
import { parseNotification } from '../store/settlement.js';

const within = async (promise: Promise<void>, ms: number) =>
  Promise.race([promise.then(() => 'woken' as const), new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms))]);

describe('EventHub', () => {
  test('a notification while the reader was reading (nobody waiting) ends its next wait at once', async () => {
    const hub = new EventHub();
    const seen = hub.version('confirmations:AAAADEFFXXX');
    hub.notify('confirmations:AAAADEFFXXX'); // during the read
    expect(await within(hub.wait('confirmations:AAAADEFFXXX', 5_000, undefined, seen), 100)).toBe('woken');
  });

  test('without news since the version, the wait waits for the next notification or its timeout', async () => {
    const hub = new EventHub();
    hub.notify('confirmations:BBBBDEFFXXX'); // another topic
    const seen = hub.version('confirmations:AAAADEFFXXX');
    expect(await within(hub.wait('confirmations:AAAADEFFXXX', 5_000, undefined, seen), 50)).toBe('timed out');
    const waiting = hub.wait('confirmations:AAAADEFFXXX', 5_000, undefined, hub.version('confirmations:AAAADEFFXXX'));
    hub.notify('confirmations:AAAADEFFXXX');
    expect(await within(waiting, 100)).toBe('woken');
    expect(await within(hub.wait('confirmations:AAAADEFFXXX', 30), 200)).toBe('woken'); // the timeout
  });

  test('notifyAll counts as news for every topic', async () => {
    const hub = new EventHub();
    const seen = hub.version('inbound:AAAADEFFXXX');
    hub.notifyAll();
    expect(hub.version('inbound:AAAADEFFXXX')).not.toBe(seen);
    expect(await within(hub.wait('inbound:AAAADEFFXXX', 5_000, undefined, seen), 100)).toBe('woken');
  });
});

describe('parseNotification', () => {
  test('splits the source from the topic, and takes a bare topic (older nodes) as having none', () => {
    expect(parseNotification('node-1/abc confirmations:AAAADEFFXXX')).toEqual({ source: 'node-1/abc', topic: 'confirmations:AAAADEFFXXX' });
    expect(parseNotification('inbound:AAAADEFFXXX')).toEqual({ source: '', topic: 'inbound:AAAADEFFXXX' });
  });
});
