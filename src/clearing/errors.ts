// The one error type of the clearing core. The API maps it to a gRPC status
// at one boundary; the domain never imports gRPC.

export type ClearingErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'CANCELLED'
  | 'DEADLINE_EXCEEDED'
  | 'UNAUTHENTICATED'
  | 'OUT_OF_RANGE'
  | 'UNIMPLEMENTED'
  | 'INTERNAL';

import type { FieldViolation } from './validation.js';

export type { FieldViolation };

export class ClearingError extends Error {
  override name = 'ClearingError';
  constructor(
    readonly code: ClearingErrorCode,
    /** Stable UPPER_SNAKE reason, sent as google.rpc.ErrorInfo.reason. */
    readonly reason: string,
    message: string,
    readonly details: {
      fieldViolations?: FieldViolation[];
      metadata?: Record<string, string>;
      cause?: unknown;
    } = {},
  ) {
    super(message, { cause: details.cause });
  }
}

export function invalidArgument(violations: FieldViolation[]): ClearingError {
  const first = violations[0];
  const summary = first ? `${first.field}: ${first.description}` : 'invalid request';
  const more = violations.length > 1 ? ` (and ${violations.length - 1} more)` : '';
  return new ClearingError('INVALID_ARGUMENT', 'INVALID_FIELDS', `${summary}${more}`, { fieldViolations: violations });
}
