// Deciding a settlement batch: every operation, in arrival order, against the
// running state of the positions it touches. Pure and synchronous: the store
// hands in a snapshot read under the batch's locks and writes what comes out.
//
// Two transfers that each fit but together overdraw a position are decided one
// after the other: the first settles, the second sees the lowered position and
// is rejected AM04.
import { ClearingError } from './errors.js';
import { reasonCode, reasons, type ReasonKey } from './reasons.js';
import type {
  BatchKeys,
  BatchSnapshot,
  BatchWrites,
  ConfirmationRow,
  ParticipantLockRow,
  PositionOperationKind,
  PositionOperationRow,
  PositionRow,
  TransferConfirmationSequences,
  TransferRow,
} from '../store/rows.js';

export const int64Max = 9_223_372_036_854_775_807n;

/** The account that stands for the central bank's RTGS system in the journal. */
export const rtgsAccount = 'RTGS';

/** A validated credit transfer instruction as the core sees it. */
export type TransferInstruction = Pick<
  TransferRow,
  | 'instructionId'
  | 'endToEndId'
  | 'uetr'
  | 'debtorAgent'
  | 'creditorAgent'
  | 'intermediaryAgent'
  | 'currency'
  | 'amountMinor'
  | 'debtorName'
  | 'debtorIban'
  | 'creditorName'
  | 'creditorIban'
  | 'remittanceInformation'
>;

export interface TransferOperation {
  kind: 'transfer';
  transfer: TransferInstruction;
  /** SHA-256 of the instruction's content: tells a replay from a reuse. */
  digest: Buffer;
  receivedAt: Date;
  traceId: string;
}

export interface PositionOperation {
  kind: PositionOperationKind;
  requestId: string;
  bic: string;
  currency: string;
  /** FUND/DEFUND: the amount moved; SET_DEBIT_CAP: the new cap. */
  amountMinor: bigint;
  digest: Buffer;
}

/** The creditor agent's answer to a reserved transfer (pacs.002 ACCP or RJCT). */
export interface AnswerOperation {
  kind: 'answer';
  /** The transfer as read before queueing: its parties and amount never change. */
  transfer: TransferRow;
  decision: 'ACCEPT' | 'REJECT';
  /** ISO 20022 reason code of a reject; empty on accept. */
  reasonCode: string;
}

/** Ends a reservation whose timeout has passed (AB05). */
export interface ExpireOperation {
  kind: 'expire';
  transfer: TransferRow;
}

export type Operation = TransferOperation | PositionOperation | AnswerOperation | ExpireOperation;

export type OperationOutcome =
  | { kind: 'transfer'; transfer: TransferRow; replayed: boolean }
  | { kind: 'position'; position: PositionRow; replayed: boolean }
  | { kind: 'error'; error: ClearingError };

export interface BatchRules {
  transferAmountMaxMinor: bigint;
  reservationTimeoutMs: number;
  now: Date;
}

/** A position's key in maps: BIC and currency. */
export const positionKey = (bic: string, currency: string) => `${bic}\u0000${currency}`;
const instructionKey = (debtorAgent: string, instructionId: string) => `${debtorAgent}\u0000${instructionId}`;

/** Calls `visit` with every participant `op` involves (whose row its batch locks); stops at the first true. */
export function someParticipant(op: Operation, visit: (bic: string) => boolean): boolean {
  if (op.kind === 'transfer' || op.kind === 'answer' || op.kind === 'expire') {
    const t = op.transfer;
    return visit(t.debtorAgent) || visit(t.creditorAgent) || (t.intermediaryAgent !== '' && visit(t.intermediaryAgent));
  }
  return visit(op.bic);
}

/** What a batch of operations must lock and look up. */
export function batchKeys(operations: readonly Operation[]): BatchKeys {
  const positions = new Map<string, { bic: string; currency: string }>();
  const participants = new Set<string>();
  const instructions: BatchKeys['instructions'] = [];
  const uetrs = new Set<string>();
  const requestIds: string[] = [];
  const addPosition = (bic: string, currency: string) => positions.set(positionKey(bic, currency), { bic, currency });
  for (const op of operations) {
    if (op.kind === 'transfer' || op.kind === 'answer' || op.kind === 'expire') {
      // A transfer's two positions, its parties, and its instruction id (to
      // find it, or to tell a replay from a new one).
      const t = op.transfer;
      addPosition(t.debtorAgent, t.currency);
      addPosition(t.creditorAgent, t.currency);
      instructions.push({ debtorAgent: t.debtorAgent, instructionId: t.instructionId });
      if (op.kind === 'transfer') uetrs.add(t.uetr);
    } else {
      addPosition(op.bic, op.currency);
      requestIds.push(op.requestId);
    }
    someParticipant(op, (bic) => {
      participants.add(bic);
      return false; // every one of them
    });
  }
  return {
    positions: [...positions.values()],
    participants: [...participants],
    instructions,
    uetrs: [...uetrs],
    requestIds,
  };
}

/** Decides every operation of a batch in arrival order; returns the writes and one outcome per operation. */
export function decideBatch(
  operations: readonly Operation[],
  snapshot: BatchSnapshot,
  rules: BatchRules,
): { writes: BatchWrites; result: OperationOutcome[] } {
  const now = rules.now;
  const positions = new Map<string, PositionRow>();
  for (const p of snapshot.positions) positions.set(positionKey(p.bic, p.currency), { ...p });
  const participants = new Map<string, ParticipantLockRow>();
  for (const p of snapshot.participants) participants.set(p.bic, { ...p });
  const transfers = new Map<string, TransferRow>();
  for (const t of snapshot.transfers) transfers.set(instructionKey(t.debtorAgent, t.instructionId), t);
  const uetrsInUse = new Set(snapshot.uetrsInUse);
  const positionOperations = new Map<string, PositionOperationRow>();
  for (const o of snapshot.positionOperations) positionOperations.set(o.requestId, o);

  const changedPositions = new Set<PositionRow>();
  const sequenced = new Set<ParticipantLockRow>();
  const inserted = new Set<TransferRow>();
  // Participants to wake: with new confirmations, with new inbound transfers.
  const confirmed = new Set<string>();
  const reservedFor = new Set<string>();
  const writes: BatchWrites = {
    operations: 0,
    transfers: [],
    finalizedTransfers: [],
    notifications: [],
    positions: [],
    participantSequences: [],
    journal: [],
    positionOperations: [],
    confirmations: [],
    transferConfirmations: { debtor: [], creditor: [], intermediary: [] },
    finalizedConfirmations: { debtor: [], creditor: [], intermediary: [] },
  };

  /** Confirms `row` to `bic` (when it is a participant and the transfer is final); returns the sequence number or null. */
  const confirm = (bic: string, role: ConfirmationRow['role'], row: TransferRow): bigint | null => {
    const participant = participants.get(bic);
    if (participant === undefined || row.finalAt === null || row.status === 'RESERVED') return null;
    participant.confirmationSequence += 1n;
    sequenced.add(participant);
    confirmed.add(bic);
    writes.confirmations.push({
      bic,
      sequence: participant.confirmationSequence,
      debtorAgent: row.debtorAgent,
      instructionId: row.instructionId,
      role,
      status: row.status,
      reasonCode: row.reasonCode,
      reason: row.reason,
      finalAt: row.finalAt,
    });
    return participant.confirmationSequence;
  };

  /** Confirms `row` to every party; the sequence numbers go to `into`, aligned with the list `row` was just added to. */
  const confirmAll = (row: TransferRow, into: TransferConfirmationSequences) => {
    into.debtor.push(confirm(row.debtorAgent, 'DEBTOR', row));
    into.creditor.push(confirm(row.creditorAgent, 'CREDITOR', row));
    into.intermediary.push(row.intermediaryAgent === '' ? null : confirm(row.intermediaryAgent, 'INTERMEDIARY', row));
  };

  /** Moves the money: debit the debtor, credit the creditor, two journal entries. */
  const settle = (row: TransferRow, from: PositionRow, to: PositionRow) => {
    from.balanceMinor -= row.amountMinor;
    to.balanceMinor += row.amountMinor;
    changedPositions.add(from).add(to);
    writes.journal.push({
      currency: row.currency,
      debitAccount: row.debtorAgent,
      creditAccount: row.creditorAgent,
      amountMinor: row.amountMinor,
      transferDebtorAgent: row.debtorAgent,
      transferInstructionId: row.instructionId,
      positionRequestId: null,
    });
  };

  /**
   * Brings a stored RESERVED transfer to its final status: release the
   * reservation, settle if accepted, confirm to every party.
   */
  const finalize = (current: TransferRow, status: 'SETTLED' | 'REJECTED' | 'EXPIRED', reasonCode: string, reason: string): TransferRow => {
    const debtorPosition = positions.get(positionKey(current.debtorAgent, current.currency));
    const creditorPosition = positions.get(positionKey(current.creditorAgent, current.currency));
    if (debtorPosition === undefined || creditorPosition === undefined) {
      // Positions are never removed, so a reserved transfer always has both.
      throw new Error(`positions of reserved transfer ${current.uetr} are missing`);
    }
    debtorPosition.reservedMinor -= current.amountMinor;
    changedPositions.add(debtorPosition);
    const row = copyTransfer(current);
    row.status = status;
    row.reasonCode = reasonCode;
    row.reason = reason;
    row.finalAt = now;
    row.batchId = snapshot.batchId;
    if (status === 'SETTLED') settle(row, debtorPosition, creditorPosition);
    transfers.set(instructionKey(row.debtorAgent, row.instructionId), row);
    writes.finalizedTransfers.push(row);
    confirmAll(row, writes.finalizedConfirmations);
    return row;
  };

  const isDue = (t: TransferRow) => t.expireAt !== null && t.expireAt.getTime() <= now.getTime();

  const decideAnswer = (op: AnswerOperation): OperationOutcome => {
    const current = transfers.get(instructionKey(op.transfer.debtorAgent, op.transfer.instructionId));
    if (current === undefined) {
      return { kind: 'error', error: new ClearingError('NOT_FOUND', 'TRANSFER_NOT_FOUND', `no transfer with uetr ${op.transfer.uetr}`) };
    }
    // Answered before, or expired: the final result again.
    if (current.status !== 'RESERVED' || inserted.has(current)) return { kind: 'transfer', transfer: current, replayed: true };
    // The answer came too late: the reservation expires now, and that is the outcome.
    if (isDue(current)) return { kind: 'transfer', transfer: finalize(current, 'EXPIRED', 'AB05', reasons.AB05), replayed: false };
    const creditorPosition = positions.get(positionKey(current.creditorAgent, current.currency));
    let row: TransferRow;
    if (op.decision === 'REJECT') row = finalize(current, 'REJECTED', op.reasonCode, creditorRejectionReason(op.reasonCode));
    else if (creditorPosition !== undefined && !canCredit(creditorPosition, current.amountMinor)) {
      row = finalize(current, 'REJECTED', reasonCode('AM02_CREDITOR_LIMIT'), reasons.AM02_CREDITOR_LIMIT);
    } else row = finalize(current, 'SETTLED', '', '');
    return { kind: 'transfer', transfer: row, replayed: false };
  };

  const decideExpiry = (op: ExpireOperation): OperationOutcome => {
    const current = transfers.get(instructionKey(op.transfer.debtorAgent, op.transfer.instructionId));
    if (current === undefined) {
      return { kind: 'error', error: new ClearingError('NOT_FOUND', 'TRANSFER_NOT_FOUND', `no transfer with uetr ${op.transfer.uetr}`) };
    }
    // Another node or an answer got there first, or it is not due yet: nothing to do.
    if (current.status !== 'RESERVED' || inserted.has(current) || !isDue(current)) {
      return { kind: 'transfer', transfer: current, replayed: true };
    }
    return { kind: 'transfer', transfer: finalize(current, 'EXPIRED', 'AB05', reasons.AB05), replayed: false };
  };

  const decideTransfer = (op: TransferOperation): OperationOutcome => {
    const t = op.transfer;
    const key = instructionKey(t.debtorAgent, t.instructionId);
    const known = transfers.get(key);
    if (known !== undefined) {
      if (known.requestDigest.equals(op.digest)) return { kind: 'transfer', transfer: known, replayed: true };
      return {
        kind: 'error',
        error: new ClearingError(
          'ALREADY_EXISTS',
          'INSTRUCTION_ID_REUSED',
          `instruction_id ${t.instructionId} was already used by ${t.debtorAgent} for a different transfer (uetr ${known.uetr})`,
          { metadata: { instruction_id: t.instructionId, uetr: known.uetr } },
        ),
      };
    }
    const debtor = participants.get(t.debtorAgent);
    if (debtor === undefined) {
      return {
        kind: 'error',
        error: new ClearingError('PERMISSION_DENIED', 'UNKNOWN_PARTICIPANT', `${t.debtorAgent} is not a participant of this clearing node`),
      };
    }
    const creditor = participants.get(t.creditorAgent);
    const intermediary = t.intermediaryAgent === '' ? undefined : participants.get(t.intermediaryAgent);
    const debtorPosition = positions.get(positionKey(t.debtorAgent, t.currency));
    const creditorPosition = positions.get(positionKey(t.creditorAgent, t.currency));

    let rejection: ReasonKey | undefined;
    if (uetrsInUse.has(t.uetr)) rejection = 'DUPL';
    else if (t.amountMinor > rules.transferAmountMaxMinor) rejection = 'AM02';
    else if (creditor === undefined) rejection = 'RC01_CREDITOR';
    else if (t.intermediaryAgent !== '' && (intermediary === undefined || intermediary.kind !== 'GATEWAY'))
      rejection = 'RC01_INTERMEDIARY';
    else if (debtor.status !== 'ACTIVE') rejection = 'AG01_DEBTOR';
    else if (creditor.status !== 'ACTIVE') rejection = 'AG01_CREDITOR';
    else if (intermediary !== undefined && intermediary.status !== 'ACTIVE') rejection = 'AG01_INTERMEDIARY';
    else if (debtorPosition === undefined) rejection = 'AM03_DEBTOR';
    else if (creditorPosition === undefined) rejection = 'AM03_CREDITOR';
    else if (available(debtorPosition) < t.amountMinor) rejection = 'AM04';
    else if (!canCredit(creditorPosition, t.amountMinor)) rejection = 'AM02_CREDITOR_LIMIT';

    const row = transferRow(t, {
      requestDigest: op.digest,
      status: 'REJECTED',
      reasonCode: '',
      reason: '',
      receivedAt: op.receivedAt,
      reservedAt: null,
      finalAt: null,
      expireAt: null,
      traceId: op.traceId,
      creditorSequence: null,
      batchId: snapshot.batchId,
    });
    if (rejection !== undefined) {
      row.reasonCode = reasonCode(rejection);
      row.reason = reasons[rejection];
      row.finalAt = now;
    } else if (creditor?.acceptanceMode === 'EXPLICIT') {
      // Two-phase: hold the amount until the creditor agent answers or the reservation expires.
      // The creditor's inbound sequence orders its stream of transfers waiting for an answer.
      const position = debtorPosition as PositionRow;
      position.reservedMinor += t.amountMinor;
      changedPositions.add(position);
      creditor.inboundSequence += 1n;
      sequenced.add(creditor);
      reservedFor.add(creditor.bic);
      row.status = 'RESERVED';
      row.reservedAt = now;
      row.expireAt = new Date(now.getTime() + rules.reservationTimeoutMs);
      row.creditorSequence = creditor.inboundSequence;
    } else {
      row.status = 'SETTLED';
      row.reservedAt = now;
      row.finalAt = now;
      settle(row, debtorPosition as PositionRow, creditorPosition as PositionRow);
    }
    transfers.set(key, row);
    inserted.add(row);
    if (row.reasonCode !== 'DUPL') uetrsInUse.add(t.uetr);
    writes.transfers.push(row);
    confirmAll(row, writes.transferConfirmations);
    return { kind: 'transfer', transfer: row, replayed: false };
  };

  const decidePositionOperation = (op: PositionOperation): OperationOutcome => {
    const known = positionOperations.get(op.requestId);
    if (known !== undefined) {
      if (known.requestDigest.equals(op.digest)) {
        return {
          kind: 'position',
          replayed: true,
          position: {
            bic: known.bic,
            currency: known.currency,
            balanceMinor: known.balanceAfterMinor,
            reservedMinor: known.reservedAfterMinor,
            debitCapMinor: known.debitCapAfterMinor,
            updatedAt: known.createdAt,
          },
        };
      }
      return {
        kind: 'error',
        error: new ClearingError(
          'ALREADY_EXISTS',
          'REQUEST_ID_REUSED',
          `request_id ${op.requestId} was already used for a different operation`,
          { metadata: { request_id: op.requestId } },
        ),
      };
    }
    const position = positions.get(positionKey(op.bic, op.currency));
    if (position === undefined) {
      const exists = participants.has(op.bic);
      return {
        kind: 'error',
        error: exists
          ? new ClearingError('FAILED_PRECONDITION', 'NO_POSITION', `${op.bic} does not settle in ${op.currency}`)
          : new ClearingError('NOT_FOUND', 'PARTICIPANT_NOT_FOUND', `participant ${op.bic} does not exist`),
      };
    }
    const next = { ...position };
    if (op.kind === 'FUND') next.balanceMinor += op.amountMinor;
    else if (op.kind === 'DEFUND') next.balanceMinor -= op.amountMinor;
    else next.debitCapMinor = op.amountMinor;
    if (next.balanceMinor > int64Max || next.balanceMinor + next.debitCapMinor > int64Max) {
      return {
        kind: 'error',
        error: new ClearingError('FAILED_PRECONDITION', 'POSITION_LIMIT', `the position of ${op.bic} in ${op.currency} would exceed 2^63-1 minor units`),
      };
    }
    if (available(next) < 0n) {
      return {
        kind: 'error',
        error: new ClearingError(
          'FAILED_PRECONDITION',
          'INSUFFICIENT_AVAILABLE',
          `${op.kind === 'DEFUND' ? 'defunding' : 'lowering the debit cap of'} ${op.bic} by this amount would make its available ${op.currency} position negative (available ${available(position)})`,
          { metadata: { available_minor: available(position).toString() } },
        ),
      };
    }
    position.balanceMinor = next.balanceMinor;
    position.debitCapMinor = next.debitCapMinor;
    position.updatedAt = now;
    changedPositions.add(position);
    const row: PositionOperationRow = {
      requestId: op.requestId,
      kind: op.kind,
      bic: op.bic,
      currency: op.currency,
      amountMinor: op.amountMinor,
      requestDigest: op.digest,
      balanceAfterMinor: position.balanceMinor,
      reservedAfterMinor: position.reservedMinor,
      debitCapAfterMinor: position.debitCapMinor,
      batchId: snapshot.batchId,
      createdAt: now,
    };
    positionOperations.set(op.requestId, row);
    writes.positionOperations.push(row);
    if (op.kind !== 'SET_DEBIT_CAP') {
      const [debited, credited] = op.kind === 'FUND' ? [rtgsAccount, op.bic] : [op.bic, rtgsAccount];
      writes.journal.push({
        currency: op.currency,
        debitAccount: debited,
        creditAccount: credited,
        amountMinor: op.amountMinor,
        transferDebtorAgent: null,
        transferInstructionId: null,
        positionRequestId: row.requestId,
      });
    }
    return { kind: 'position', position: { ...position }, replayed: false };
  };

  const result = operations.map((op): OperationOutcome => {
    switch (op.kind) {
      case 'transfer':
        return decideTransfer(op);
      case 'answer':
        return decideAnswer(op);
      case 'expire':
        return decideExpiry(op);
      default:
        return decidePositionOperation(op);
    }
  });

  for (const p of changedPositions) {
    p.updatedAt = now;
    writes.positions.push(p);
  }
  for (const p of sequenced) {
    writes.participantSequences.push({ bic: p.bic, confirmationSequence: p.confirmationSequence, inboundSequence: p.inboundSequence });
  }
  for (const bic of confirmed) writes.notifications.push(`confirmations:${bic}`);
  for (const bic of reservedFor) writes.notifications.push(`inbound:${bic}`);
  writes.operations = writes.transfers.length + writes.finalizedTransfers.length + writes.positionOperations.length;
  return { writes, result };
}

/**
 * A transfer row from an instruction and the rest of its fields, every field
 * spelled out: an object spread plus added fields builds a slow
 * dictionary-mode object, and this runs for every transfer.
 */
function transferRow(t: TransferInstruction, rest: Omit<TransferRow, keyof TransferInstruction>): TransferRow {
  return {
    debtorAgent: t.debtorAgent,
    instructionId: t.instructionId,
    endToEndId: t.endToEndId,
    uetr: t.uetr,
    creditorAgent: t.creditorAgent,
    intermediaryAgent: t.intermediaryAgent,
    currency: t.currency,
    amountMinor: t.amountMinor,
    debtorName: t.debtorName,
    debtorIban: t.debtorIban,
    creditorName: t.creditorName,
    creditorIban: t.creditorIban,
    remittanceInformation: t.remittanceInformation,
    requestDigest: rest.requestDigest,
    status: rest.status,
    reasonCode: rest.reasonCode,
    reason: rest.reason,
    receivedAt: rest.receivedAt,
    reservedAt: rest.reservedAt,
    finalAt: rest.finalAt,
    expireAt: rest.expireAt,
    traceId: rest.traceId,
    creditorSequence: rest.creditorSequence,
    batchId: rest.batchId,
  };
}

const copyTransfer = (t: TransferRow): TransferRow => transferRow(t, t);

/**
 * Whether a position can be credited: balance + debit cap must stay within
 * int64, or the database's available-amount check itself would overflow.
 */
function canCredit(p: PositionRow, amountMinor: bigint): boolean {
  return p.balanceMinor + p.debitCapMinor <= int64Max - amountMinor;
}

export function available(p: Pick<PositionRow, 'balanceMinor' | 'debitCapMinor' | 'reservedMinor'>): bigint {
  return p.balanceMinor + p.debitCapMinor - p.reservedMinor;
}

/** The sentence for a creditor agent's reject reason code. */
export function creditorRejectionReason(code: string): string {
  const known: Record<string, string> = {
    AC01: 'The creditor account number is incorrect.',
    AC04: 'The creditor account is closed.',
    AC06: 'The creditor account is blocked.',
    AG01: 'The transaction is forbidden on the creditor account.',
    AM09: 'The amount is not the amount agreed or expected.',
    BE01: 'The creditor name does not match the account holder.',
    FR01: 'Rejected by the creditor agent for suspected fraud.',
    MS02: 'Rejected by the creditor for a reason it did not specify.',
    MS03: 'Rejected by the creditor agent for a reason it did not specify.',
    RR04: 'Rejected by the creditor agent for regulatory reasons.',
  };
  return known[code] ?? `Rejected by the creditor agent with reason code ${code}.`;
}
