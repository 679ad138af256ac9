// Server-stream plumbing: honour HTTP/2 flow control instead of buffering
// without bound for a client that reads slowly.
import type { ServerWritableStream } from '@grpc/grpc-js';

/** Writes one message; when the stream's buffer is full, waits for 'drain' (or abort). */
export async function writeWithBackPressure<Req, Res>(call: ServerWritableStream<Req, Res>, message: Res, abort: AbortSignal): Promise<void> {
  if (call.write(message)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      call.off('drain', done);
      abort.removeEventListener('abort', done);
      resolve();
    };
    call.once('drain', done);
    abort.addEventListener('abort', done, { once: true });
  });
}
