// Reading a server stream in tests: messages queue up until taken.
import type { ClientReadableStream } from '@grpc/grpc-js';

export interface StreamReader<T> {
  /** The next message, or an error after `timeoutMs`. */
  next(timeoutMs?: number): Promise<T>;
  /** Resolves after `ms` with whatever arrived meanwhile, not yet taken. */
  drainFor(ms: number): Promise<T[]>;
  cancel(): void;
  /** The status the stream ended with, once it ended. */
  ended: Promise<{ code: number; details: string }>;
}

export function readStream<T>(stream: ClientReadableStream<T>): StreamReader<T> {
  const queue: T[] = [];
  const waiting: ((value: T) => void)[] = [];
  let endedResolve: (s: { code: number; details: string }) => void = () => {};
  const ended = new Promise<{ code: number; details: string }>((resolve) => (endedResolve = resolve));
  stream.on('data', (message: T) => {
    const waiter = waiting.shift();
    if (waiter !== undefined) waiter(message);
    else queue.push(message);
  });
  stream.on('status', (s: { code: number; details: string }) => endedResolve(s));
  stream.on('error', () => {});
  return {
    next(timeoutMs = 5_000) {
      const queued = queue.shift();
      if (queued !== undefined) return Promise.resolve(queued);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(take), 1);
          reject(new Error(`no stream message within ${timeoutMs} ms`));
        }, timeoutMs);
        const take = (value: T) => {
          clearTimeout(timer);
          resolve(value);
        };
        waiting.push(take);
      });
    },
    async drainFor(ms: number) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return queue.splice(0, queue.length);
    },
    cancel() {
      stream.cancel();
    },
    ended,
  };
}
