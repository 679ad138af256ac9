// The one boundary where errors become gRPC statuses. A ClearingError keeps
// its code, message and details (google.rpc.ErrorInfo, google.rpc.BadRequest in
// the `grpc-status-details-bin` trailer); anything else is logged and sent as
// INTERNAL without its cause.
import { Metadata, status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { Any } from '../gen/google/protobuf/any.js';
import { BadRequest, ErrorInfo } from '../gen/google/rpc/error_details.js';
import { Status } from '../gen/google/rpc/status.js';
import { ClearingError } from '../clearing/errors.js';
import type { Logger } from '../telemetry/logger.js';

export const errorDomain = 'clearing.v1';

function packAny(typeName: string, bytes: Uint8Array): Any {
  return { typeUrl: `type.googleapis.com/${typeName}`, value: Buffer.from(bytes) };
}

export function toStatus(error: unknown, logger: Logger): Partial<StatusObject> {
  if (!(error instanceof ClearingError)) {
    logger.error({ err: error }, 'unexpected error in call');
    error = new ClearingError('INTERNAL', 'INTERNAL', 'internal error; the cause is in the node\'s log');
  }
  const e = error as ClearingError;
  if (e.code === 'UNAVAILABLE' || e.code === 'INTERNAL') {
    if (e.cause !== undefined) logger.warn({ err: e.cause, reason: e.reason }, e.message);
  }
  const code = status[e.code];
  const details: Any[] = [
    packAny('google.rpc.ErrorInfo', ErrorInfo.encode({ reason: e.reason, domain: errorDomain, metadata: e.details.metadata ?? {} }).finish()),
  ];
  if (e.details.fieldViolations !== undefined && e.details.fieldViolations.length > 0) {
    details.push(packAny('google.rpc.BadRequest', BadRequest.encode({ fieldViolations: e.details.fieldViolations }).finish()));
  }
  const metadata = new Metadata();
  metadata.set('grpc-status-details-bin', Buffer.from(Status.encode({ code, message: e.message, details }).finish()));
  return { code, details: e.message, metadata };
}

/** Decodes the rich error details of a ServiceError (for clients and tests). */
export function errorDetailsOf(error: ServiceError): { errorInfo?: ErrorInfo; badRequest?: BadRequest } {
  const raw = error.metadata?.get('grpc-status-details-bin')[0];
  if (raw === undefined || typeof raw === 'string') return {};
  const decoded = Status.decode(raw);
  const out: { errorInfo?: ErrorInfo; badRequest?: BadRequest } = {};
  for (const any of decoded.details) {
    if (any.typeUrl.endsWith('/google.rpc.ErrorInfo')) out.errorInfo = ErrorInfo.decode(any.value);
    if (any.typeUrl.endsWith('/google.rpc.BadRequest')) out.badRequest = BadRequest.decode(any.value);
  }
  return out;
}
