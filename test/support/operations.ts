// Builders of the core's own inputs (operations, locked rows) for tests that
// drive decideBatch or the settlement engine directly, below the gRPC API.
import { createHash, randomUUID } from 'node:crypto';
import type { Operation } from '../../src/clearing/batch.js';
import type { ParticipantLockRow, PositionRow, TransferRow } from '../../src/store/rows.js';

let operationsMade = 0;

/** A fresh instruction id with `prefix`, unique in this process. */
export function uniqueInstructionId(prefix: string): string {
  operationsMade += 1;
  return `${prefix}-${operationsMade}`;
}

const digestOf = (text: string) => createHash('sha256').update(text).digest();

/** A credit transfer in EUR with a fresh instruction id (`prefix`-n) and UETR. */
export function transferOperation(
  prefix: string,
  parties: { debtorAgent: string; creditorAgent: string; intermediaryAgent?: string },
  amountMinor: bigint,
): Operation {
  const id = uniqueInstructionId(prefix);
  return {
    kind: 'transfer',
    transfer: {
      instructionId: id,
      endToEndId: id,
      uetr: randomUUID(),
      debtorAgent: parties.debtorAgent,
      creditorAgent: parties.creditorAgent,
      intermediaryAgent: parties.intermediaryAgent ?? '',
      currency: 'EUR',
      amountMinor,
      debtorName: 'Debtor',
      debtorIban: 'DE89370400440532013000',
      creditorName: 'Creditor',
      creditorIban: 'DE89370400440532013001',
      remittanceInformation: '',
    },
    digest: digestOf(id),
    receivedAt: new Date(),
    traceId: '',
  };
}

/** A liquidity transfer or debit cap change in EUR with a fresh request id. */
export function positionOperation(prefix: string, kind: 'FUND' | 'DEFUND' | 'SET_DEBIT_CAP', bic: string, amountMinor: bigint): Operation {
  const requestId = uniqueInstructionId(`${prefix}-${kind.toLowerCase()}`);
  return { kind, requestId, bic, currency: 'EUR', amountMinor, digest: digestOf(requestId) };
}

/** A participant row as a settlement batch locks it: active, no inbound transfers yet. */
export function participantRow(
  bic: string,
  confirmationSequence = 0n,
  kind: ParticipantLockRow['kind'] = 'BANK',
  acceptanceMode: ParticipantLockRow['acceptanceMode'] = 'AUTOMATIC',
): ParticipantLockRow {
  return { bic, kind, status: 'ACTIVE', acceptanceMode, confirmationSequence, inboundSequence: 0n };
}

/** A EUR position with `balanceMinor`, nothing reserved, no debit cap. */
export function positionRow(bic: string, balanceMinor: bigint): PositionRow {
  return { bic, currency: 'EUR', balanceMinor, reservedMinor: 0n, debitCapMinor: 0n, updatedAt: new Date(0) };
}

/**
 * A stored transfer of 100 EUR from DEBTDEFFXXX to `creditorAgent` as a batch
 * wrote it, its UETR derived from `instructionId` (digits); `fields` override.
 */
export function transferRow(instructionId: string, creditorAgent: string, fields: Partial<TransferRow> = {}): TransferRow {
  const at = new Date('2026-11-26T12:00:00Z');
  return {
    debtorAgent: 'DEBTDEFFXXX',
    instructionId,
    endToEndId: `e2e-${instructionId}`,
    uetr: `00000000-0000-4000-8000-${instructionId.padStart(12, '0')}`,
    creditorAgent,
    intermediaryAgent: '',
    currency: 'EUR',
    amountMinor: 100n,
    debtorName: 'x',
    debtorIban: 'x',
    creditorName: 'x',
    creditorIban: 'x',
    remittanceInformation: '',
    requestDigest: Buffer.alloc(32),
    status: 'SETTLED',
    reasonCode: '',
    reason: '',
    receivedAt: at,
    reservedAt: null,
    finalAt: at,
    expireAt: null,
    traceId: `trace-${instructionId}`,
    creditorSequence: null,
    batchId: 1n,
    ...fields,
  };
}
