// Structured JSON logs (pino) carrying the active trace and span ids. Log
// lines carry ids (UETR, instruction id, BICs), never personal data: errors
// are serialised without Postgres' `detail`, which can quote a whole row.
import { pino, type Logger } from 'pino';
import { activeTraceFields } from './tracing.js';

export type { Logger };

/** An error as logged: what it is and where, never row contents. */
export function serializeError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const e = error as Error & { code?: unknown; reason?: unknown; constraint?: unknown; table?: unknown; cause?: unknown };
  return {
    type: e.name,
    message: e.message,
    ...(e.code === undefined ? {} : { code: e.code }),
    ...(e.reason === undefined ? {} : { reason: e.reason }),
    ...(e.constraint === undefined ? {} : { constraint: e.constraint }),
    ...(e.table === undefined ? {} : { table: e.table }),
    ...(e.stack === undefined ? {} : { stack: e.stack }),
    ...(e.cause === undefined ? {} : { cause: serializeError(e.cause) }),
  };
}

export function createLogger(level: string, bindings: Record<string, string> = {}, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: { err: serializeError },
      mixin: activeTraceFields,
    },
    destination,
  );
}
