// Row shapes shared by the store and the clearing core. Money is bigint minor units.

export type TransferStatusName = 'RESERVED' | 'SETTLED' | 'REJECTED' | 'EXPIRED';
export type ParticipantKindName = 'BANK' | 'GATEWAY';
export type ParticipantStatusName = 'ACTIVE' | 'SUSPENDED';
export type AcceptanceModeName = 'AUTOMATIC' | 'EXPLICIT';
export type PositionOperationKind = 'FUND' | 'DEFUND' | 'SET_DEBIT_CAP';
export type ConfirmationRoleName = 'DEBTOR' | 'CREDITOR' | 'INTERMEDIARY';

export interface ParticipantRow {
  bic: string;
  name: string;
  kind: ParticipantKindName;
  status: ParticipantStatusName;
  acceptanceMode: AcceptanceModeName;
  settlementCurrencies: string[];
  createdAt: Date;
  updatedAt: Date;
}

export interface PositionRow {
  bic: string;
  currency: string;
  balanceMinor: bigint;
  reservedMinor: bigint;
  debitCapMinor: bigint;
  updatedAt: Date;
}

/** A participant as the settlement transaction sees it, row locked. */
export interface ParticipantLockRow {
  bic: string;
  kind: ParticipantKindName;
  status: ParticipantStatusName;
  acceptanceMode: AcceptanceModeName;
  confirmationSequence: bigint;
  inboundSequence: bigint;
}

export interface TransferRow {
  debtorAgent: string;
  instructionId: string;
  endToEndId: string;
  uetr: string;
  creditorAgent: string;
  intermediaryAgent: string;
  currency: string;
  amountMinor: bigint;
  debtorName: string;
  debtorIban: string;
  creditorName: string;
  creditorIban: string;
  remittanceInformation: string;
  requestDigest: Buffer;
  status: TransferStatusName;
  reasonCode: string;
  reason: string;
  receivedAt: Date;
  reservedAt: Date | null;
  finalAt: Date | null;
  expireAt: Date | null;
  traceId: string;
  /** The creditor agent's inbound sequence number; set when reserved for an EXPLICIT creditor. */
  creditorSequence: bigint | null;
  batchId: bigint;
}

export interface PositionOperationRow {
  requestId: string;
  kind: PositionOperationKind;
  bic: string;
  currency: string;
  amountMinor: bigint;
  requestDigest: Buffer;
  balanceAfterMinor: bigint;
  reservedAfterMinor: bigint;
  debitCapAfterMinor: bigint;
  batchId: bigint;
  createdAt: Date;
}

/** One booking: `amountMinor` from `debitAccount` to `creditAccount`. */
export interface JournalRow {
  currency: string;
  debitAccount: string;
  creditAccount: string;
  amountMinor: bigint;
  transferDebtorAgent: string | null;
  transferInstructionId: string | null;
  positionRequestId: string | null;
}

export interface ConfirmationRow {
  bic: string;
  sequence: bigint;
  debtorAgent: string;
  instructionId: string;
  role: ConfirmationRoleName;
  status: Exclude<TransferStatusName, 'RESERVED'>;
  reasonCode: string;
  reason: string;
  finalAt: Date;
}

/** What a settlement batch touches: the store locks and reads exactly these. */
export interface BatchKeys {
  positions: { bic: string; currency: string }[];
  participants: string[];
  instructions: { debtorAgent: string; instructionId: string }[];
  uetrs: string[];
  requestIds: string[];
}

/** The state a batch is decided against, read after its locks are held. */
export interface BatchSnapshot {
  batchId: bigint;
  positions: PositionRow[];
  participants: ParticipantLockRow[];
  /** Stored transfers with the instruction ids of the batch. */
  transfers: TransferRow[];
  /** UETRs of the batch already taken by a stored transfer. */
  uetrsInUse: string[];
  positionOperations: PositionOperationRow[];
}

/** The participants and positions a batch is decided against without reading them under its locks. */
export interface ExpectedRows {
  participants: ParticipantLockRow[];
  positions: PositionRow[];
}

/**
 * The confirmation sequence numbers a batch gave some transfers, one array
 * per role, aligned with a list of transfers; null where that party gets no
 * confirmation (not final yet, no intermediary, an unknown creditor).
 */
export interface TransferConfirmationSequences {
  debtor: (bigint | null)[];
  creditor: (bigint | null)[];
  intermediary: (bigint | null)[];
}

/** Everything a batch writes, set-based, in one statement. */
export interface BatchWrites {
  operations: number;
  /** New transfers. */
  transfers: TransferRow[];
  /** Stored RESERVED transfers that reached their final status in this batch. */
  finalizedTransfers: TransferRow[];
  positions: PositionRow[];
  participantSequences: { bic: string; confirmationSequence: bigint; inboundSequence: bigint }[];
  journal: JournalRow[];
  positionOperations: PositionOperationRow[];
  /** Every confirmation, for the streams; each is also in transferConfirmations or finalizedConfirmations. */
  confirmations: ConfirmationRow[];
  /** The sequence numbers of `confirmations`, aligned with `transfers`. */
  transferConfirmations: TransferConfirmationSequences;
  /** Likewise, aligned with `finalizedTransfers`. */
  finalizedConfirmations: TransferConfirmationSequences;
  /** Participants with new inbound transfers or confirmations, to wake their streams. */
  notifications: string[];
}
