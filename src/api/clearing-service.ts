// ClearingService adapter: decode, authenticate, call the core, map the result.
import type { ServerWritableStream } from '@grpc/grpc-js';
import type {
  ClearingServiceServer,
  GetPositionRequest,
  GetPositionResponse,
  GetTransferRequest,
  GetTransferResponse,
  ListConfirmationsResponse,
  RespondToTransferResponse,
  RespondToTransfersResponse,
  SubmitTransferRequest,
  SubmitTransferResponse,
  SubmitTransfersRequest,
  SubmitTransfersResponse,
} from '../gen/clearing/v1/clearing_service.js';
import { TransferStatus, type CreditTransfer, type TransferResult } from '../gen/clearing/v1/transfer.js';
import { ClearingError, invalidArgument, type FieldViolation } from '../clearing/errors.js';
import type { ClearingCore, TransferOutcome } from '../clearing/core.js';
import { isValidUetr, validateCreditTransfer } from '../clearing/validation.js';
import { requireParticipant } from './auth.js';
import { instructionFromProto, positionToProto, transferRecordToProto, transferResultToProto } from './convert.js';
import { traceIdOf, unary, unimplemented, type CallInfo } from './handlers.js';
import { toStatus } from './status.js';
import type { Logger } from '../telemetry/logger.js';

export interface ClearingServiceLimits {
  /** Most transfers in one SubmitTransfers call. */
  submitBatchTransfersMax: number;
}

export function clearingService(core: ClearingCore, limits: ClearingServiceLimits, logger: Logger): ClearingServiceServer {
  /** Validates every transfer, checks the caller is each one's debtor agent, and submits them as one unit. */
  async function submit(transfers: CreditTransfer[], fieldOf: (i: number) => string, info: CallInfo): Promise<TransferOutcome[]> {
    const caller = requireParticipant(info.principal);
    const violations: FieldViolation[] = [];
    transfers.forEach((t, i) => violations.push(...validateCreditTransfer(t, fieldOf(i))));
    if (violations.length > 0) throw invalidArgument(violations);
    const foreign = transfers.findIndex((t) => t.debtorAgent !== caller);
    if (foreign >= 0) {
      throw new ClearingError(
        'PERMISSION_DENIED',
        'NOT_DEBTOR_AGENT',
        `${fieldOf(foreign)}.debtor_agent ${transfers[foreign]?.debtorAgent} is not the caller ${caller}: a participant submits only its own transfers`,
      );
    }
    return core.submitTransfers(transfers.map(instructionFromProto), { receivedAt: info.receivedAt, traceId: traceIdOf(info.metadata) }, info.call);
  }

  return {
    submitTransfer: unary(logger, async (request: SubmitTransferRequest, info): Promise<SubmitTransferResponse> => {
      const transfer = request.transfer;
      const [outcome] = await submit(transfer === undefined ? [undefined as never] : [transfer], () => 'transfer', info);
      if (outcome === undefined) throw new ClearingError('INTERNAL', 'NO_OUTCOME', 'no outcome for the transfer');
      if (outcome.kind === 'error') throw outcome.error;
      return { result: transferResultToProto(outcome.transfer, outcome.replayed) };
    }),

    submitTransfers: unary(logger, async (request: SubmitTransfersRequest, info): Promise<SubmitTransfersResponse> => {
      const count = request.transfers.length;
      if (count === 0 || count > limits.submitBatchTransfersMax) {
        throw invalidArgument([{ field: 'transfers', description: `must hold 1 to ${limits.submitBatchTransfersMax} transfers (got ${count})` }]);
      }
      const outcomes = await submit(request.transfers, (i) => `transfers[${i}]`, info);
      const results = outcomes.map((outcome, i): TransferResult => {
        if (outcome.kind === 'transfer') return transferResultToProto(outcome.transfer, outcome.replayed);
        // An instruction id reused with other content is this item's problem alone:
        // it is answered in place, not stored, and the rest of the batch stands.
        if (outcome.error.reason === 'INSTRUCTION_ID_REUSED') return reusedInstructionResult(request.transfers[i] as CreditTransfer, outcome.error);
        throw outcome.error;
      });
      return { results };
    }),

    getTransfer: unary(logger, async (request: GetTransferRequest, info): Promise<GetTransferResponse> => {
      const caller = requireParticipant(info.principal);
      const lookup = request.lookup;
      if (lookup === undefined || lookup.value === '') {
        throw invalidArgument([{ field: 'lookup', description: 'set uetr or instruction_id' }]);
      }
      if (lookup.$case === 'uetr' && !isValidUetr(lookup.value)) throw invalidArgument([{ field: 'uetr', description: 'must be a UUIDv4' }]);
      const found = await core.getTransfer(caller, lookup.$case === 'uetr' ? { uetr: lookup.value } : { instructionId: lookup.value });
      return { transfer: transferRecordToProto(found) };
    }),

    getPosition: unary(logger, async (request: GetPositionRequest, info): Promise<GetPositionResponse> => {
      const caller = requireParticipant(info.principal);
      return { positions: (await core.positionsOf(caller, request.currency)).map(positionToProto) };
    }),

    listConfirmations: unary(logger, async (): Promise<ListConfirmationsResponse> => {
      throw unimplemented('ListConfirmations', 'settlement confirmations');
    }),

    respondToTransfer: unary(logger, async (): Promise<RespondToTransferResponse> => {
      throw unimplemented('RespondToTransfer', 'creditor acceptance');
    }),

    respondToTransfers: unary(logger, async (): Promise<RespondToTransfersResponse> => {
      throw unimplemented('RespondToTransfers', 'creditor acceptance');
    }),

    streamConfirmations: (call: ServerWritableStream<unknown, unknown>) => {
      call.emit('error', toStatus(unimplemented('StreamConfirmations', 'settlement confirmations'), logger));
    },

    streamInboundTransfers: (call: ServerWritableStream<unknown, unknown>) => {
      call.emit('error', toStatus(unimplemented('StreamInboundTransfers', 'creditor acceptance'), logger));
    },
  };
}

function reusedInstructionResult(t: CreditTransfer, error: ClearingError): TransferResult {
  return {
    uetr: t.uetr,
    instructionId: t.instructionId,
    status: TransferStatus.TRANSFER_STATUS_REJECTED,
    reasonCode: 'AM05',
    reason: `Not stored: ${error.message}.`,
    replayed: false,
    receivedTime: undefined,
    reservedTime: undefined,
    finalTime: undefined,
    expireTime: undefined,
  };
}
