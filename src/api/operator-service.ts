// OperatorService adapter: decode, authenticate, call the core, map the result.
import type { Money } from '../gen/clearing/v1/money.js';
import type {
  CreateParticipantRequest,
  CreateParticipantResponse,
  DefundPositionRequest,
  DefundPositionResponse,
  FundPositionRequest,
  FundPositionResponse,
  GetParticipantRequest,
  GetParticipantResponse,
  InspectTransferRequest,
  InspectTransferResponse,
  ListParticipantsRequest,
  ListParticipantsResponse,
  ListPositionsRequest,
  ListPositionsResponse,
  ListTransfersRequest,
  ListTransfersResponse,
  OperatorServiceServer,
  ReconcileResponse,
  SetDebitCapRequest,
  SetDebitCapResponse,
  TransferEvent,
  UpdateParticipantRequest,
  UpdateParticipantResponse,
} from '../gen/clearing/v1/operator_service.js';
import { invalidArgument } from '../clearing/errors.js';
import type { ClearingCore } from '../clearing/core.js';
import { isValidUetr } from '../clearing/validation.js';
import type { PositionOperationKind, TransferRow } from '../store/rows.js';
import type { ConfirmationEvent } from '../store/reads.js';
import { requireOperator } from './auth.js';
import {
  participantFromProto,
  participantToProto,
  positionToProto,
  transferRecordToProto,
  transferStatusName,
} from './convert.js';
import { unary, type CallInfo } from './handlers.js';
import type { Logger } from '../telemetry/logger.js';

export function operatorService(core: ClearingCore, logger: Logger): OperatorServiceServer {
  /** Every OperatorService call is the operator's: authorise once, here. */
  function operator<Req, Res>(handler: (request: Req, info: CallInfo) => Promise<Res>) {
    return unary<Req, Res>(logger, async (request, info) => {
      requireOperator(info.principal);
      return handler(request, info);
    });
  }

  function changePosition(kind: PositionOperationKind, amountField: string) {
    return async (request: { requestId: string; bic: string }, money: Money | undefined, info: CallInfo) => {
      if (money === undefined) throw invalidArgument([{ field: amountField, description: 'is required' }]);
      const { position, replayed } = await core.changePosition(
        kind,
        { requestId: request.requestId, bic: request.bic, currency: money.currency, amountMinor: money.amountMinor },
        amountField,
        info.call,
      );
      return { position: positionToProto(position), replayed };
    };
  }
  const fund = changePosition('FUND', 'amount');
  const defund = changePosition('DEFUND', 'amount');
  const setDebitCap = changePosition('SET_DEBIT_CAP', 'debit_cap');

  return {
    createParticipant: operator(async (request: CreateParticipantRequest): Promise<CreateParticipantResponse> => {
      if (request.participant === undefined) throw invalidArgument([{ field: 'participant', description: 'is required' }]);
      return { participant: participantToProto(await core.createParticipant(participantFromProto(request.participant))) };
    }),

    getParticipant: operator(async (request: GetParticipantRequest): Promise<GetParticipantResponse> => {
      return { participant: participantToProto(await core.getParticipant(request.bic)) };
    }),

    listParticipants: operator(async (request: ListParticipantsRequest): Promise<ListParticipantsResponse> => {
      const page = await core.listParticipants(request.pageSize, request.pageToken);
      return { participants: page.participants.map(participantToProto), nextPageToken: page.nextPageToken };
    }),

    updateParticipant: operator(async (request: UpdateParticipantRequest): Promise<UpdateParticipantResponse> => {
      if (request.participant === undefined) throw invalidArgument([{ field: 'participant', description: 'is required' }]);
      const updated = await core.updateParticipant(participantFromProto(request.participant), request.updateMask ?? []);
      return { participant: participantToProto(updated) };
    }),

    fundPosition: operator(
      async (request: FundPositionRequest, info): Promise<FundPositionResponse> => fund(request, request.amount, info),
    ),

    defundPosition: operator(
      async (request: DefundPositionRequest, info): Promise<DefundPositionResponse> => defund(request, request.amount, info),
    ),

    setDebitCap: operator(
      async (request: SetDebitCapRequest, info): Promise<SetDebitCapResponse> => setDebitCap(request, request.debitCap, info),
    ),

    listPositions: operator(async (request: ListPositionsRequest): Promise<ListPositionsResponse> => {
      const page = await core.listPositions({ bic: request.bic, currency: request.currency }, request.pageSize, request.pageToken);
      return { positions: page.positions.map(positionToProto), nextPageToken: page.nextPageToken };
    }),

    listTransfers: operator(async (request: ListTransfersRequest): Promise<ListTransfersResponse> => {
      const page = await core.listTransfers(
        { bic: request.bic, status: transferStatusName(request.status) },
        request.pageSize,
        request.pageToken,
      );
      return { transfers: page.transfers.map(transferRecordToProto), nextPageToken: page.nextPageToken };
    }),

    inspectTransfer: operator(async (request: InspectTransferRequest): Promise<InspectTransferResponse> => {
      if (!isValidUetr(request.uetr)) throw invalidArgument([{ field: 'uetr', description: 'must be a UUIDv4' }]);
      const { transfer, confirmations } = await core.inspectTransfer(request.uetr);
      return {
        transfer: transferRecordToProto(transfer),
        events: lifecycleOf(transfer, confirmations),
        traceId: transfer.traceId,
        batchId: transfer.batchId,
      };
    }),

    reconcile: operator(async (): Promise<ReconcileResponse> => {
      const r = await core.reconcile();
      return {
        clean: r.clean,
        checkTime: r.checkTime,
        violations: r.violations,
        totals: r.totals.map((t) => ({
          currency: t.currency,
          balanceTotalMinor: t.balanceTotalMinor.toString(),
          fundedTotalMinor: t.fundedTotalMinor.toString(),
          defundedTotalMinor: t.defundedTotalMinor.toString(),
          reservedTotalMinor: t.reservedTotalMinor.toString(),
          reservedTransfersTotalMinor: t.reservedTransfersTotalMinor.toString(),
          journalDebitTotalMinor: t.journalDebitTotalMinor.toString(),
          journalCreditTotalMinor: t.journalCreditTotalMinor.toString(),
        })),
      };
    }),
  };
}

/** The state changes of a transfer and the deliveries of its confirmations, oldest first. */
function lifecycleOf(t: TransferRow, confirmations: ConfirmationEvent[]): TransferEvent[] {
  const events: TransferEvent[] = [{ kind: 'RECEIVED', time: t.receivedAt, bic: t.debtorAgent, batchId: 0n }];
  // A two-phase transfer has a reservation of its own; an automatic one is reserved and settled at once.
  if (t.reservedAt !== null && (t.creditorSequence !== null || t.status === 'RESERVED')) {
    events.push({ kind: 'RESERVED', time: t.reservedAt, bic: t.debtorAgent, batchId: 0n });
  }
  if (t.finalAt !== null) events.push({ kind: t.status, time: t.finalAt, bic: '', batchId: t.batchId });
  for (const c of confirmations) {
    if (c.deliveredAt !== null) events.push({ kind: 'CONFIRMATION_DELIVERED', time: c.deliveredAt, bic: c.bic, batchId: c.batchId });
  }
  return events.sort((x, y) => (x.time?.getTime() ?? 0) - (y.time?.getTime() ?? 0));
}
