import { describe, expect, test } from 'vitest';
import { itemsPerSliceMax, mapInSlices } from './slices.js';

describe('mapInSlices', () => {
  test('maps in order, with indexes', async () => {
    const items = Array.from({ length: itemsPerSliceMax * 3 + 7 }, (_, i) => i);
    expect(await mapInSlices(items, (x, i) => x * 2 + i)).toEqual(items.map((x, i) => x * 2 + i));
    expect(await mapInSlices([], (x: number) => x)).toEqual([]);
  });

  test('other callbacks run between slices, not only at the end', async () => {
    const items = Array.from({ length: itemsPerSliceMax * 3 }, (_, i) => i);
    const seenAt: number[] = [];
    let mapped = 0;
    const tick = () => {
      seenAt.push(mapped);
      if (mapped < items.length) setImmediate(tick);
    };
    setImmediate(tick);
    await mapInSlices(items, (x) => {
      mapped += 1;
      return x;
    });
    // The other callback ran while the map was between its first and last item.
    expect(seenAt.some((n) => n > 0 && n < items.length)).toBe(true);
  });
});
