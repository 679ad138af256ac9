// The gRPC server: ClearingService, OperatorService, grpc.health.v1.Health and
// server reflection (so `grpcurl -plaintext 127.0.0.1:50051 list` works).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials, type ServerOptions } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { ClearingServiceService, type ClearingServiceServer } from '../gen/clearing/v1/clearing_service.js';
import { OperatorServiceService, type OperatorServiceServer } from '../gen/clearing/v1/operator_service.js';

const protoDir = fileURLToPath(new URL('../../proto/', import.meta.url));

export const servingNames = ['', 'clearing.v1.ClearingService', 'clearing.v1.OperatorService'] as const;

/** Server-side limits and keepalive for long-lived streams across long-haul links. */
export const serverOptions: ServerOptions = {
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
  // Channelz keeps per-call and per-connection counters for a channelz service
  // this server does not offer (metrics come from OpenTelemetry): bookkeeping
  // on every call for nobody.
  'grpc.enable_channelz': 0,
};

export interface ClearingServer {
  server: Server;
  health: HealthImplementation;
  /** The bound port (useful when listening on port 0). */
  port: number;
}

export async function startServer(
  address: string,
  services: { clearing: ClearingServiceServer; operator: OperatorServiceServer },
): Promise<ClearingServer> {
  const server = new Server(serverOptions);
  server.addService(ClearingServiceService, services.clearing);
  server.addService(OperatorServiceService, services.operator);

  const health = new HealthImplementation(Object.fromEntries(servingNames.map((name) => [name, 'NOT_SERVING'])));
  health.addToServer(server);

  const definitions = loadSync(
    [path.join(protoDir, 'clearing/v1/clearing_service.proto'), path.join(protoDir, 'clearing/v1/operator_service.proto'), healthProtoPath],
    { includeDirs: [protoDir, path.resolve(path.dirname(healthProtoPath), '../..')], keepCase: true, longs: String, enums: String },
  );
  new ReflectionService(definitions).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  for (const name of servingNames) health.setStatus(name, 'SERVING');
  return { server, health, port };
}
