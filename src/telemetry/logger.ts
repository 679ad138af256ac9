// Structured JSON logs (pino). Log lines carry ids (UETR, instruction id, BICs),
// never personal data such as names or IBANs.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, bindings: Record<string, string> = {}): Logger {
  return pino({ level, base: { ...bindings }, timestamp: pino.stdTimeFunctions.isoTime });
}
