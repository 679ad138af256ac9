// Conversions between the v1 contract (src/gen) and the core's rows.
import { AcceptanceMode, ParticipantKind, ParticipantStatus, type Participant, type Position } from '../gen/clearing/v1/participant.js';
import { TransferStatus, type CreditTransfer, type TransferRecord, type TransferResult } from '../gen/clearing/v1/transfer.js';
import type { ParticipantInput } from '../clearing/core.js';
import { ConfirmationRole, type Confirmation } from '../gen/clearing/v1/confirmation.js';
import type { ConfirmationView } from '../store/reads.js';
import type { TransferInstruction } from '../clearing/batch.js';
import { available } from '../clearing/batch.js';
import type {
  AcceptanceModeName,
  ParticipantKindName,
  ParticipantRow,
  ParticipantStatusName,
  PositionRow,
  TransferRow,
  TransferStatusName,
} from '../store/rows.js';

const kinds: Record<ParticipantKindName, ParticipantKind> = {
  BANK: ParticipantKind.PARTICIPANT_KIND_BANK,
  GATEWAY: ParticipantKind.PARTICIPANT_KIND_GATEWAY,
};
const statuses: Record<ParticipantStatusName, ParticipantStatus> = {
  ACTIVE: ParticipantStatus.PARTICIPANT_STATUS_ACTIVE,
  SUSPENDED: ParticipantStatus.PARTICIPANT_STATUS_SUSPENDED,
};
const modes: Record<AcceptanceModeName, AcceptanceMode> = {
  AUTOMATIC: AcceptanceMode.ACCEPTANCE_MODE_AUTOMATIC,
  EXPLICIT: AcceptanceMode.ACCEPTANCE_MODE_EXPLICIT,
};
export const transferStatuses: Record<TransferStatusName, TransferStatus> = {
  RESERVED: TransferStatus.TRANSFER_STATUS_RESERVED,
  SETTLED: TransferStatus.TRANSFER_STATUS_SETTLED,
  REJECTED: TransferStatus.TRANSFER_STATUS_REJECTED,
  EXPIRED: TransferStatus.TRANSFER_STATUS_EXPIRED,
};

function nameOf<N extends string, E extends number>(table: Record<N, E>, value: E): N | 'UNSPECIFIED' {
  for (const [name, v] of Object.entries(table) as [N, E][]) if (v === value) return name;
  return 'UNSPECIFIED';
}

export function transferStatusName(value: TransferStatus): TransferStatusName | '' {
  const name = nameOf(transferStatuses, value);
  return name === 'UNSPECIFIED' ? '' : name;
}

export function participantToProto(p: ParticipantRow): Participant {
  return {
    bic: p.bic,
    name: p.name,
    kind: kinds[p.kind],
    status: statuses[p.status],
    acceptanceMode: modes[p.acceptanceMode],
    settlementCurrencies: p.settlementCurrencies,
    createTime: p.createdAt,
    updateTime: p.updatedAt,
  };
}

export function participantFromProto(p: Participant | undefined): ParticipantInput {
  return {
    bic: p?.bic ?? '',
    name: p?.name ?? '',
    kind: p === undefined ? 'UNSPECIFIED' : nameOf(kinds, p.kind),
    status: p === undefined ? 'UNSPECIFIED' : nameOf(statuses, p.status),
    acceptanceMode: p === undefined ? 'UNSPECIFIED' : nameOf(modes, p.acceptanceMode),
    settlementCurrencies: p?.settlementCurrencies ?? [],
  };
}

export function positionToProto(p: PositionRow): Position {
  return {
    bic: p.bic,
    currency: p.currency,
    balanceMinor: p.balanceMinor,
    reservedMinor: p.reservedMinor,
    debitCapMinor: p.debitCapMinor,
    availableMinor: available(p),
    updateTime: p.updatedAt,
  };
}

/** A validated CreditTransfer as the core's instruction (call only after validation). */
export function instructionFromProto(t: CreditTransfer): TransferInstruction {
  return {
    instructionId: t.instructionId,
    endToEndId: t.endToEndId,
    uetr: t.uetr.toLowerCase(),
    debtorAgent: t.debtorAgent,
    creditorAgent: t.creditorAgent,
    intermediaryAgent: t.intermediaryAgent,
    currency: t.amount?.currency ?? '',
    amountMinor: t.amount?.amountMinor ?? 0n,
    debtorName: t.debtor?.name ?? '',
    debtorIban: t.debtor?.iban ?? '',
    creditorName: t.creditor?.name ?? '',
    creditorIban: t.creditor?.iban ?? '',
    remittanceInformation: t.remittanceInformation,
  };
}

export function transferResultToProto(t: TransferRow, replayed: boolean): TransferResult {
  return {
    uetr: t.uetr,
    instructionId: t.instructionId,
    status: transferStatuses[t.status],
    reasonCode: t.reasonCode,
    reason: t.reason,
    replayed,
    receivedTime: t.receivedAt,
    reservedTime: t.reservedAt ?? undefined,
    finalTime: t.finalAt ?? undefined,
    expireTime: t.status === 'RESERVED' ? (t.expireAt ?? undefined) : undefined,
  };
}

export function creditTransferToProto(t: TransferRow): CreditTransfer {
  return {
    instructionId: t.instructionId,
    endToEndId: t.endToEndId,
    uetr: t.uetr,
    debtorAgent: t.debtorAgent,
    creditorAgent: t.creditorAgent,
    intermediaryAgent: t.intermediaryAgent,
    amount: { currency: t.currency, amountMinor: t.amountMinor },
    debtor: { name: t.debtorName, iban: t.debtorIban },
    creditor: { name: t.creditorName, iban: t.creditorIban },
    remittanceInformation: t.remittanceInformation,
    paymentRequestId: '',
  };
}

export function transferRecordToProto(t: TransferRow): TransferRecord {
  return { transfer: creditTransferToProto(t), result: transferResultToProto(t, false) };
}

const roles: Record<ConfirmationView['role'], ConfirmationRole> = {
  DEBTOR: ConfirmationRole.CONFIRMATION_ROLE_DEBTOR,
  CREDITOR: ConfirmationRole.CONFIRMATION_ROLE_CREDITOR,
  INTERMEDIARY: ConfirmationRole.CONFIRMATION_ROLE_INTERMEDIARY,
};

/** A confirmation as its recipient sees it: the counterparty is the other bank. */
export function confirmationToProto(c: ConfirmationView): Confirmation {
  return {
    sequence: c.sequence,
    uetr: c.uetr,
    instructionId: c.instructionId,
    endToEndId: c.endToEndId,
    role: roles[c.role],
    status: transferStatuses[c.status],
    reasonCode: c.reasonCode,
    reason: c.reason,
    amount: { currency: c.currency, amountMinor: c.amountMinor },
    counterpartyBic: c.role === 'CREDITOR' ? c.debtorAgent : c.creditorAgent,
    finalTime: c.finalAt,
    traceId: c.traceId,
    debtorAgent: c.debtorAgent,
    creditorAgent: c.creditorAgent,
  };
}
