// The ceiling of the benchmark: a separate process serving the same
// ClearingService (the generated service definition, so the same protobuf
// encoding and decoding) with canned answers and no work behind them. Driving it
// with the same client as the node shows what grpc-js itself manages on this
// machine at this moment; the node's figures are reported as a ratio to it.
//
// Run by test/bench/run.ts as `tsx test/bench/noop-server.ts`, listening on
// BENCH_NOOP_ADDRESS (127.0.0.1:<port>).
import { serverOptions } from '../../src/api/server.js';
import { Server, ServerCredentials, status, type sendUnaryData } from '@grpc/grpc-js';
import { ClearingServiceService, type ClearingServiceServer } from '../../src/gen/clearing/v1/clearing_service.js';
import { TransferStatus, type TransferResult } from '../../src/gen/clearing/v1/transfer.js';


/** A SETTLED answer with every timestamp set, the size of a real one. */
const settledAt = new Date();
const cannedResult: TransferResult = {
  uetr: '',
  instructionId: '',
  status: TransferStatus.TRANSFER_STATUS_SETTLED,
  reasonCode: '',
  reason: '',
  replayed: false,
  receivedTime: settledAt,
  reservedTime: settledAt,
  finalTime: settledAt,
  expireTime: undefined,
};

function unimplemented(_call: unknown, callback: sendUnaryData<never>): void {
  callback({ code: status.UNIMPLEMENTED, details: 'the no-op ceiling server answers SubmitTransfer and SubmitTransfers only' });
}

const service: ClearingServiceServer = {
  // The request's ids are echoed, as the node does, so the answer carries the same bytes.
  submitTransfer(call, callback) {
    const t = call.request.transfer;
    callback(null, { result: { ...cannedResult, uetr: t?.uetr ?? '', instructionId: t?.instructionId ?? '' } });
  },
  submitTransfers(call, callback) {
    callback(null, { results: call.request.transfers.map((t) => ({ ...cannedResult, uetr: t.uetr, instructionId: t.instructionId })) });
  },
  getTransfer: unimplemented,
  getPosition: unimplemented,
  listConfirmations: unimplemented,
  respondToTransfer: unimplemented,
  respondToTransfers: unimplemented,
  streamConfirmations(call) {
    call.emit('error', { code: status.UNIMPLEMENTED, details: 'not served by the no-op server' });
  },
  streamInboundTransfers(call) {
    call.emit('error', { code: status.UNIMPLEMENTED, details: 'not served by the no-op server' });
  },
};

async function main(): Promise<void> {
  const address = process.env['BENCH_NOOP_ADDRESS'] ?? '127.0.0.1:0';
  const server = new Server(serverOptions);
  server.addService(ClearingServiceService, service);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  process.stdout.write(`${JSON.stringify({ msg: 'no-op server serving', port })}\n`);
  const shutdown = () => server.tryShutdown(() => process.exit(0));
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main().catch((error: unknown) => {
  process.stderr.write(`no-op server failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
