#!/usr/bin/env node
// Container health check: asks the node's grpc.health.v1.Health service whether
// it is SERVING and exits 0 if so, 1 otherwise.
//
// Why a script instead of Kubernetes' built-in `grpc:` probe or Docker's port
// checks: until TLS lands the node listens only on 127.0.0.1 *inside* its
// container, and a kubelet probe connects to the pod IP, never to the pod's
// loopback. A command run inside the container (exec probe, HEALTHCHECK) shares
// that loopback and can reach the node. It uses only the node's own runtime
// dependencies, so the image needs no extra binary.
//
// Usage: node deploy/health-check.mjs [host:port] [service]
//   host:port  default: $CLEARING_GRPC_ADDRESS, else 127.0.0.1:50051
//   service    default: '' (the whole node); or clearing.v1.ClearingService,
//              clearing.v1.OperatorService
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const grpc = require('@grpc/grpc-js');
const { service: healthService } = require('grpc-health-check');

/** A probe that hangs is a failed probe; answer well inside the probe's own timeout. */
const deadlineMs = 2_000;

// Empty means unset, as in the node's own configuration.
const address = process.argv[2] || process.env.CLEARING_GRPC_ADDRESS || '127.0.0.1:50051';
const serviceName = process.argv[3] ?? '';

const Health = grpc.makeGenericClientConstructor(healthService, 'Health');
let client;
try {
  client = new Health(address, grpc.credentials.createInsecure());
} catch (error) {
  process.stderr.write(`health check: bad address ${JSON.stringify(address)}: ${error.message}\n`);
  process.exit(1);
}

client.Check({ service: serviceName }, { deadline: Date.now() + deadlineMs }, (error, response) => {
  client.close();
  if (error) {
    process.stderr.write(`health check of ${address} failed: ${error.message}\n`);
    process.exit(1);
  }
  const status = response?.status ?? 'UNKNOWN';
  process.stdout.write(`${address} ${serviceName === '' ? '(node)' : serviceName}: ${status}\n`);
  process.exit(status === 'SERVING' ? 0 : 1);
});
