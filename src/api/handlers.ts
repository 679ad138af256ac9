// Shared plumbing of the service adapters: run a handler, map its error once.
import { type handleUnaryCall, type Metadata, type ServerUnaryCall } from '@grpc/grpc-js';
import type { CallContext } from '../clearing/engine.js';
import { principalOf, type Principal } from './auth.js';
import { toStatus } from './status.js';
import type { Logger } from '../telemetry/logger.js';

export interface CallInfo {
  principal: Principal;
  metadata: Metadata;
  call: CallContext;
  receivedAt: Date;
}

type Cancellable = { cancelled: boolean; getDeadline(): Date | number };

export function callContextOf(call: Cancellable): CallContext {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  return { cancelled: () => call.cancelled, deadlineMs: Number.isFinite(deadlineMs) && deadlineMs > 0 ? deadlineMs : Infinity };
}

export function unary<Req, Res>(logger: Logger, handler: (request: Req, info: CallInfo) => Promise<Res>): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback) => {
    const receivedAt = new Date();
    let principal: Principal;
    try {
      principal = principalOf(call.metadata);
    } catch (error) {
      callback(toStatus(error, logger));
      return;
    }
    handler(call.request, { principal, metadata: call.metadata, call: callContextOf(call), receivedAt }).then(
      (response) => callback(null, response),
      (error: unknown) => callback(toStatus(error, logger)),
    );
  };
}

