// Long loops over a request's items give the event loop back now and then.
//
// One SubmitTransfers of 1,000 transfers is ~10 ms of validation, conversion
// and SHA-256 digests. Run in one piece, it delays every other callback by as
// much, among them the settlement batch's database answers, which arrive while
// that batch holds its participants' locks: the lock is then held longer and
// the next batch waits. In slices, another callback waits at most a slice.
import { setImmediate as nextTurn } from 'node:timers/promises';

/** Items handled between two turns of the event loop (~1 ms of validation and digests). */
export const itemsPerSliceMax = 100;

/** `items.map(fn)`, yielding to the event loop between slices of `itemsPerSliceMax`. */
export async function mapInSlices<T, R>(items: readonly T[], fn: (item: T, index: number) => R): Promise<R[]> {
  const results = new Array<R>(items.length);
  for (let i = 0; i < items.length; i++) {
    if (i > 0 && i % itemsPerSliceMax === 0) await nextTurn();
    results[i] = fn(items[i] as T, i);
  }
  return results;
}
