// Promise-returning wrappers around the generated gRPC clients, carrying the
// caller's identity the way a bank's client would (x-principal metadata).
import { credentials, Metadata, type CallOptions, type Client, type ServiceError } from '@grpc/grpc-js';
import { ClearingServiceClient } from '../../src/gen/clearing/v1/clearing_service.js';
import { OperatorServiceClient } from '../../src/gen/clearing/v1/operator_service.js';
import { errorDetailsOf } from '../../src/api/status.js';

type UnaryMethod<Req, Res> = (request: Req, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: Res) => void) => unknown;

/** The unary methods of a generated client, as promises. */
export type Promised<C> = {
  [K in keyof C as C[K] extends { (request: infer _R, metadata: Metadata, options: Partial<CallOptions>, callback: infer _C): unknown } ? K : never]: C[K] extends {
    (request: infer Req, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: infer Res) => void): unknown;
  }
    ? (request: Req, options?: Partial<CallOptions>) => Promise<Res>
    : never;
};

function promised<C extends Client>(client: C, principal: string | undefined): Promised<C> & { raw: C; metadata: () => Metadata } {
  const metadata = () => {
    const m = new Metadata();
    if (principal !== undefined) m.set('x-principal', principal);
    return m;
  };
  return new Proxy({} as Promised<C> & { raw: C; metadata: () => Metadata }, {
    get(_target, name) {
      if (name === 'raw') return client;
      if (name === 'metadata') return metadata;
      const method = (client as unknown as Record<string | symbol, UnaryMethod<unknown, unknown>>)[name];
      if (typeof method !== 'function') return undefined;
      return (request: unknown, options: Partial<CallOptions> = {}) =>
        new Promise((resolve, reject) => {
          method.call(client, request, metadata(), options, (error, response) => (error ? reject(error) : resolve(response)));
        });
    },
  });
}

export function clearingClient(address: string, principal: string | undefined) {
  return promised(new ClearingServiceClient(address, credentials.createInsecure()), principal);
}

export function operatorClient(address: string, principal: string | null = 'operator/test-operator') {
  return promised(new OperatorServiceClient(address, credentials.createInsecure()), principal ?? undefined);
}

export type ClearingClient = ReturnType<typeof clearingClient>;
export type OperatorClient = ReturnType<typeof operatorClient>;

/** Awaits a call expected to fail; returns its status code, message and decoded details. */
export async function failure(promise: Promise<unknown>) {
  try {
    await promise;
  } catch (error) {
    const e = error as ServiceError;
    const details = errorDetailsOf(e);
    return {
      code: e.code,
      message: e.details,
      reason: details.errorInfo?.reason,
      fields: details.badRequest?.fieldViolations.map((v) => v.field) ?? [],
    };
  }
  throw new Error('expected the call to fail, but it succeeded');
}
