// ClearingService adapter: decode, authenticate, call the core, map the result.
import assert from 'node:assert/strict';
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
import { ClearingError, invalidArgument } from '../clearing/errors.js';
import type { ClearingCore, SubscriberLimits, TransferOutcome } from '../clearing/core.js';
import { isValidUetr, validateCreditTransfer } from '../clearing/validation.js';
import { requireParticipant } from './auth.js';
import { confirmationToProto, creditTransferToProto, instructionFromProto, positionToProto, transferRecordToProto, transferResultToProto } from './convert.js';
import { unary, type CallInfo } from './handlers.js';
import { currentTraceId, inSpan } from '../telemetry/tracing.js';
import { toStatus } from './status.js';
import { principalOf } from './auth.js';
import { pumpCursorStream } from './streams.js';
import type { EventHub } from '../clearing/hub.js';
import { mapInSlices } from '../clearing/slices.js';
import { deliveredRangeSequencesMax } from '../clearing/deliveries.js';
import type { TransferRow } from '../store/rows.js';
import { CreditorDecision, type InboundTransfer } from '../gen/clearing/v1/transfer.js';
import type {
  StreamConfirmationsRequest,
  StreamConfirmationsResponse,
  StreamInboundTransfersRequest,
  StreamInboundTransfersResponse,
  TransferAnswer,
} from '../gen/clearing/v1/clearing_service.js';
import type { Logger } from '../telemetry/logger.js';

export interface ClearingServiceLimits extends SubscriberLimits {
  /** Most transfers in one SubmitTransfers call. */
  submitBatchTransfersMax: number;
  /** Longest a `wait_for_final` call waits when it has no deadline of its own. */
  finalWaitMaxMs: number;
}

/** Most answers in one RespondToTransfers call. */
export const respondBatchAnswersMax = 1_000;
/** Most inbound transfers read from the database per page of a stream. */
export const inboundPageTransfersMax = 500;
/** Most confirmations read from the database per page of a stream. */
export const confirmationPageMax = 500;
// A page's delivery is recorded as one range, which the database bounds.
assert(confirmationPageMax <= deliveredRangeSequencesMax, 'a confirmation page must fit one delivered range');
/** How often an idle stream re-reads when no wake-up came (a lost notification only delays). */
export const streamPollMs = 1_000;
/** A `wait_for_final` call answers this long before its deadline, so the RESERVED result still arrives. */
const deadlineMarginMs = 50;

export function clearingService(
  core: ClearingCore,
  hub: EventHub,
  limits: ClearingServiceLimits,
  closing: AbortSignal,
  logger: Logger,
): ClearingServiceServer {
  /** Validates every transfer, checks the caller is each one's debtor agent, and submits them as one unit. */
  async function submit(submitted: (CreditTransfer | undefined)[], fieldOf: (i: number) => string, info: CallInfo): Promise<TransferOutcome[]> {
    const caller = requireParticipant(info.principal);
    await inSpan('clearing.validate', { 'clearing.transfers': submitted.length, 'clearing.debtor_agent': caller }, async () => {
      const violations = (await mapInSlices(submitted, (t, i) => validateCreditTransfer(t, fieldOf(i)))).flat();
      if (violations.length > 0) throw invalidArgument(violations);
    });
    // Validation reports a missing transfer, so every one is present from here on.
    const transfers = submitted as CreditTransfer[];
    const foreign = transfers.findIndex((t) => t.debtorAgent !== caller);
    if (foreign >= 0) {
      throw new ClearingError(
        'PERMISSION_DENIED',
        'NOT_DEBTOR_AGENT',
        `${fieldOf(foreign)}.debtor_agent ${transfers[foreign]?.debtorAgent} is not the caller ${caller}: a participant submits only its own transfers`,
      );
    }
    const traceparent = info.metadata.get('traceparent')[0];
    return core.submitTransfers(
      await mapInSlices(transfers, instructionFromProto),
      { receivedAt: info.receivedAt, traceId: currentTraceId(typeof traceparent === 'string' ? traceparent : undefined) },
      info.call,
    );
  }

  /** Waits for RESERVED transfers to become final, bounded by the call's deadline. */
  async function waitForFinal(transfers: TransferRow[], info: CallInfo): Promise<TransferRow[]> {
    const deadlineMs = Math.min(info.call.deadlineMs - deadlineMarginMs, Date.now() + limits.finalWaitMaxMs);
    return Promise.all(transfers.map((t) => (t.status === 'RESERVED' ? core.waitForFinal(t, deadlineMs, closing) : t)));
  }

  async function respond(answers: TransferAnswer[], fieldOf: (i: number) => string, info: CallInfo): Promise<TransferResult[]> {
    const caller = requireParticipant(info.principal);
    const outcomes = await core.respond(
      caller,
      answers.map((a) => ({
        uetr: a.uetr,
        decision: a.decision === CreditorDecision.CREDITOR_DECISION_ACCEPT ? 'ACCEPT' : a.decision === CreditorDecision.CREDITOR_DECISION_REJECT ? 'REJECT' : 'UNSPECIFIED',
        reasonCode: a.reasonCode,
      })),
      fieldOf,
      info.call,
    );
    return outcomes.map((o) => {
      if (o.kind === 'error') throw o.error;
      // A repeated answer returns the final result; it is not itself a new outcome.
      return transferResultToProto(o.transfer, o.replayed);
    });
  }

  /** The creditor's stream of transfers waiting for its answer: the backlog, then live, each once per connection. */
  async function streamInbound(call: ServerWritableStream<StreamInboundTransfersRequest, StreamInboundTransfersResponse>): Promise<void> {
    const caller = requireParticipant(principalOf(call.metadata));
    const unfollow = core.followInbound(caller);
    try {
      await pumpCursorStream(call, hub, closing, {
        name: 'inbound',
        participant: caller,
        topic: `inbound:${caller}`,
        startAfter: 0n,
        read: (after, limit) => core.inboundAfter(caller, after, limit),
        cursorOf: (t) => t.creditorSequence ?? 0n,
        toMessage: (t) => ({ transfer: inboundToProto(t) }),
        pageRowsMax: inboundPageTransfersMax,
        pollMs: streamPollMs,
      });
    } finally {
      unfollow();
    }
  }

  /** The participant's confirmations after a sequence: the backlog, then live; ends if the client falls too far behind. */
  async function streamConfirmations(call: ServerWritableStream<StreamConfirmationsRequest, StreamConfirmationsResponse>): Promise<void> {
    const caller = requireParticipant(principalOf(call.metadata));
    const startAfter = await core.confirmationsStart(caller, call.request.afterSequence);
    const unfollow = core.followConfirmations(caller);
    try {
      await pumpCursorStream(call, hub, closing, {
        name: 'confirmations',
        participant: caller,
        topic: `confirmations:${caller}`,
        startAfter,
        read: (after, limit) => core.confirmationsAfter(caller, after, limit),
        cursorOf: (c) => c.sequence,
        toMessage: (c) => ({ confirmation: confirmationToProto(c) }),
        pageRowsMax: confirmationPageMax,
        pollMs: streamPollMs,
        whileBlocked: (cursor, blockedMs) => core.checkSubscriberLag(caller, cursor, blockedMs, limits),
        finalAtOf: (c) => c.finalAt,
        delivered: (first, last) => core.markConfirmationsDelivered(caller, first.sequence, last.sequence),
      });
    } finally {
      unfollow();
    }
  }

  return {
    submitTransfer: unary(logger, async (request: SubmitTransferRequest, info): Promise<SubmitTransferResponse> => {
      const transfer = request.transfer;
      const [outcome] = await submit([transfer], () => 'transfer', info);
      if (outcome === undefined) throw new ClearingError('INTERNAL', 'NO_OUTCOME', 'no outcome for the transfer');
      if (outcome.kind === 'error') throw outcome.error;
      const [final] = request.waitForFinal ? await waitForFinal([outcome.transfer], info) : [outcome.transfer];
      return { result: transferResultToProto(final ?? outcome.transfer, outcome.replayed) };
    }),

    submitTransfers: unary(logger, async (request: SubmitTransfersRequest, info): Promise<SubmitTransfersResponse> => {
      const count = request.transfers.length;
      if (count === 0 || count > limits.submitBatchTransfersMax) {
        throw invalidArgument([{ field: 'transfers', description: `must hold 1 to ${limits.submitBatchTransfersMax} transfers (got ${count})` }]);
      }
      const outcomes = await submit(request.transfers, (i) => `transfers[${i}]`, info);
      const settled = request.waitForFinal
        ? await waitForFinal(outcomes.flatMap((o) => (o.kind === 'transfer' ? [o.transfer] : [])), info)
        : [];
      const finals = new Map(settled.map((t) => [t.instructionId, t]));
      const results = outcomes.map((outcome, i): TransferResult => {
        if (outcome.kind === 'transfer') return transferResultToProto(finals.get(outcome.transfer.instructionId) ?? outcome.transfer, outcome.replayed);
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

    listConfirmations: unary(logger, async (request, info): Promise<ListConfirmationsResponse> => {
      const caller = requireParticipant(info.principal);
      const page = await core.listConfirmations(caller, request.afterSequence, request.pageSize, request.pageToken);
      return { confirmations: page.confirmations.map((c) => confirmationToProto(c)), nextPageToken: page.nextPageToken };
    }),

    respondToTransfer: unary(logger, async (request, info): Promise<RespondToTransferResponse> => {
      if (request.answer === undefined) throw invalidArgument([{ field: 'answer', description: 'is required' }]);
      const [result] = await respond([request.answer], () => 'answer', info);
      return { result };
    }),

    respondToTransfers: unary(logger, async (request, info): Promise<RespondToTransfersResponse> => {
      const count = request.answers.length;
      if (count === 0 || count > respondBatchAnswersMax) {
        throw invalidArgument([{ field: 'answers', description: `must hold 1 to ${respondBatchAnswersMax} answers (got ${count})` }]);
      }
      return { results: await respond(request.answers, (i) => `answers[${i}]`, info) };
    }),

    streamConfirmations: (call: ServerWritableStream<StreamConfirmationsRequest, StreamConfirmationsResponse>) => {
      streamConfirmations(call).catch((error: unknown) => {
        if (!call.cancelled) call.emit('error', toStatus(error, logger));
      });
    },

    streamInboundTransfers: (call: ServerWritableStream<StreamInboundTransfersRequest, StreamInboundTransfersResponse>) => {
      streamInbound(call).catch((error: unknown) => {
        if (!call.cancelled) call.emit('error', toStatus(error, logger));
      });
    },
  };
}

function inboundToProto(t: TransferRow): InboundTransfer {
  return { transfer: creditTransferToProto(t), reservedTime: t.reservedAt ?? undefined, expireTime: t.expireAt ?? undefined };
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
