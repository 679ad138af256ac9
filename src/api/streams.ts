// Server streams that follow a per-participant cursor (a gapless sequence):
// read a page after the cursor, write it honouring HTTP/2 flow control, wait
// for a wake-up (or the polling fallback), repeat. Only one page is ever held
// in memory per stream, so a slow client costs the node nothing but a cursor.
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { EventHub } from '../clearing/hub.js';
import { trace } from '@opentelemetry/api';
import type { ClearingError } from '../clearing/errors.js';
import { streamMetrics } from '../telemetry/clearing-telemetry.js';

const tracer = trace.getTracer('clearing-node');

/** How often a blocked write re-checks whether the client has fallen too far behind. */
const blockedCheckMs = 1_000;

export interface CursorStream<Row, Message> {
  /** Which stream, for spans and metrics: `confirmations` or `inbound`. */
  name: string;
  participant: string;
  /** Wake-up topic, e.g. `confirmations:<BIC>`. */
  topic: string;
  /** Deliver rows after this cursor. */
  startAfter: bigint;
  read(after: bigint, limit: number): Promise<Row[]>;
  cursorOf(row: Row): bigint;
  toMessage(row: Row): Message;
  pageRowsMax: number;
  /** How often an idle stream re-reads when no wake-up came. */
  pollMs: number;
  /**
   * Asked every second while the client does not take messages: an error ends
   * the stream (e.g. RESOURCE_EXHAUSTED when too far behind).
   */
  whileBlocked?: (cursor: bigint, blockedMs: number) => Promise<ClearingError | undefined>;
  /** When the row's transfer became final, to measure delivery lag. */
  finalAtOf?: (row: Row) => Date;
  /** Called (not awaited) after a page was written, with its first and last rows. */
  delivered?: (first: Row, last: Row) => void;
}

/** Runs a cursor stream until the client goes away, the node closes, or `whileBlocked` gives up. */
export async function pumpCursorStream<Req, Row, Message>(
  call: ServerWritableStream<Req, Message>,
  hub: EventHub,
  closing: AbortSignal,
  spec: CursorStream<Row, Message>,
): Promise<void> {
  const gone = new AbortController();
  const stop = () => gone.abort();
  call.on('cancelled', stop);
  call.on('close', stop);
  closing.addEventListener('abort', stop, { once: true });
  const metrics = streamMetrics();
  const labels = { 'clearing.stream': spec.name };
  metrics.subscribers.add(1, labels);
  try {
    let cursor = spec.startAfter;
    while (!gone.signal.aborted) {
      // Taken before reading: a wake-up during the read is not lost (see EventHub).
      const seen = hub.version(spec.topic);
      const page = await spec.read(cursor, spec.pageRowsMax);
      if (page.length > 0) {
        const first = page[0] as Row;
        const span = tracer.startSpan('clearing.stream.deliver', {
          attributes: { ...labels, 'clearing.bic': spec.participant, 'clearing.stream.after': cursor.toString(), 'clearing.stream.messages': page.length },
        });
        let written = 0;
        try {
          for (const row of page) {
            if (gone.signal.aborted) break;
            const error = await write(call, spec.toMessage(row), gone.signal, cursor, spec.whileBlocked);
            if (error !== undefined) throw error;
            cursor = spec.cursorOf(row);
            written++;
            const finalAt = spec.finalAtOf?.(row);
            if (finalAt !== undefined) metrics.lag.record(Math.max(0, Date.now() - finalAt.getTime()) / 1000, labels);
          }
        } finally {
          metrics.delivered.add(written, labels);
          span.setAttribute('clearing.stream.written', written);
          span.end();
          if (written > 0) spec.delivered?.(first, page[written - 1] as Row);
        }
      }
      if (page.length < spec.pageRowsMax) await hub.wait(spec.topic, spec.pollMs, gone.signal, seen);
    }
  } finally {
    metrics.subscribers.add(-1, labels);
    closing.removeEventListener('abort', stop);
    if (!call.cancelled && closing.aborted) call.end();
  }
}

async function write<Req, Message>(
  call: ServerWritableStream<Req, Message>,
  message: Message,
  abort: AbortSignal,
  cursor: bigint,
  whileBlocked: CursorStream<unknown, Message>['whileBlocked'],
): Promise<ClearingError | undefined> {
  if (call.write(message)) return undefined;
  const blockedSinceMs = Date.now();
  for (;;) {
    // 'drain' fires once: if the buffer drained while whileBlocked ran (it
    // awaits a database query), no listener heard it and none ever will. An
    // abort meanwhile, likewise, fires no more 'abort' events.
    if (abort.aborted || !call.writableNeedDrain) return undefined;
    const drained = await new Promise<boolean>((resolve) => {
      const done = (value: boolean) => () => {
        clearTimeout(timer);
        call.off('drain', onDrain);
        abort.removeEventListener('abort', onAbort);
        resolve(value);
      };
      const onDrain = done(true);
      const onAbort = done(true);
      const timer = setTimeout(done(false), blockedCheckMs);
      call.once('drain', onDrain);
      abort.addEventListener('abort', onAbort, { once: true });
    });
    if (drained) return undefined;
    const error = await whileBlocked?.(cursor, Date.now() - blockedSinceMs);
    if (error !== undefined) return error;
  }
}
