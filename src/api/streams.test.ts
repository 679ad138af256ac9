// pumpCursorStream over a real gRPC socket: a client that stops reading
// blocks the stream's writes; when it reads again the stream must go on at
// once, also when the write buffer drains while the stream is busy checking
// the blocked client (whileBlocked, a database query in the node).
import { credentials, Metadata, Server, ServerCredentials, type ClientReadableStream, type ServerWritableStream } from '@grpc/grpc-js';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  ClearingServiceClient,
  ClearingServiceService,
  type StreamConfirmationsRequest,
  type StreamConfirmationsResponse,
} from '../gen/clearing/v1/clearing_service.js';
import { Confirmation } from '../gen/clearing/v1/confirmation.js';
import { EventHub } from '../clearing/hub.js';
import { pumpCursorStream } from './streams.js';

/** Enough data to fill the HTTP/2 windows many times over (~1.6 MB). */
const messagesTotal = 4_000;
const padding = 'x'.repeat(400);

let server: Server;
let client: ClearingServiceClient;
const closing = new AbortController();
/** Set by the test: what the next blocked-client check does. */
let onBlocked: () => Promise<void> = async () => {};
let blockedChecks = 0;

beforeAll(async () => {
  server = new Server();
  server.addService(ClearingServiceService, {
    streamConfirmations: (call: ServerWritableStream<StreamConfirmationsRequest, StreamConfirmationsResponse>) => {
      void pumpCursorStream(call, new EventHub(), closing.signal, {
        name: 'confirmations',
        participant: 'TESTDEFFXXX',
        topic: 'confirmations:TESTDEFFXXX',
        startAfter: 0n,
        read: async (after, limit) => {
          const rows: bigint[] = [];
          for (let s = after + 1n; s <= BigInt(messagesTotal) && rows.length < limit; s++) rows.push(s);
          return rows;
        },
        cursorOf: (sequence) => sequence,
        toMessage: (sequence) => ({ confirmation: Confirmation.fromPartial({ sequence, reason: padding }) }),
        pageRowsMax: 500,
        pollMs: 60_000,
        whileBlocked: async () => {
          blockedChecks += 1;
          await onBlocked();
          return undefined;
        },
      });
    },
  } as never);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  client = new ClearingServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
});

afterAll(async () => {
  closing.abort();
  client?.close();
  await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
});

/** Resolves with the count once `total` messages arrived, or rejects after `timeoutMs`. */
function receiveAll(call: ClientReadableStream<StreamConfirmationsResponse>, total: number, timeoutMs: number, onFirst: () => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0;
    const timer = setTimeout(() => reject(new Error(`stream stalled: ${received} of ${total} messages after ${timeoutMs} ms`)), timeoutMs);
    call.on('data', (m: StreamConfirmationsResponse) => {
      received += 1;
      if (m.confirmation?.sequence !== BigInt(received)) {
        clearTimeout(timer);
        reject(new Error(`message ${received} carries sequence ${m.confirmation?.sequence}`));
      }
      if (received === 1) onFirst();
      if (received === total) {
        clearTimeout(timer);
        resolve(received);
      }
    });
    call.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

test('a stream whose client reads again while its block is being checked carries on at once', async () => {
  const call = client.streamConfirmations({ afterSequence: 0n }, new Metadata());
  let resumedAtMs = 0;
  // The first check of the blocked client lets it read again and takes a
  // while: the write buffer drains during the check, not while the stream
  // waits for it to drain.
  onBlocked = async () => {
    onBlocked = async () => {};
    resumedAtMs = Date.now();
    call.resume();
    await new Promise((resolve) => setTimeout(resolve, 500));
  };
  try {
    const all = receiveAll(call, messagesTotal, 10_000, () => call.pause());
    await expect(all).resolves.toBe(messagesTotal);
    expect(blockedChecks).toBeGreaterThanOrEqual(1);
    // Measured: the rest arrives ~1.2 s after the resume. Before the fix the
    // stream stopped for good (160 of 4,000 messages after 10 s): the drain
    // happened during the check, and the stream then waited for another one.
    expect(Date.now() - resumedAtMs).toBeLessThan(5_000);
  } finally {
    call.cancel();
  }
});
