// The settlement transaction: one Postgres transaction per batch of operations.
//
//   BEGIN
//   1. lock the positions the batch touches, sorted by (bic, currency)
//   2. lock the participants, sorted by bic, and read what the batch must check
//      (instruction ids, UETRs, request ids already used) — read after the
//      locks are held, so it sees every batch that committed before ours
//   3. the caller decides every operation against that snapshot (no I/O)
//   4. write transfers, positions, journal, operations, confirmations: one statement
//   COMMIT
//
// Lock order: every batch locks positions before participants, each in sorted
// order, so two batches (in this process or another node process) never wait
// on each other in a cycle.
import pg from 'pg';
import type {
  BatchKeys,
  BatchSnapshot,
  BatchWrites,
  ParticipantLockRow,
  PositionOperationRow,
  PositionRow,
  TransferRow,
} from './rows.js';

const lockPositionsSql = `
  SELECT p.bic, p.currency, p.balance_minor::text, p.reserved_minor::text,
         p.debit_cap_minor::text, p.updated_at
    FROM positions p
    JOIN unnest($1::text[], $2::text[]) AS k(bic, currency)
      ON p.bic = k.bic AND p.currency = k.currency
   ORDER BY p.bic, p.currency
     FOR UPDATE OF p`;

// Bigints travel as text inside JSON: JSON numbers would lose precision.
const readSnapshotSql = `
  WITH locked_participants AS (
    SELECT bic, kind, status, acceptance_mode, confirmation_sequence::text AS confirmation_sequence
      FROM participants WHERE bic = ANY($1::text[])
     ORDER BY bic
       FOR UPDATE
  ), known_transfers AS (
    SELECT t.debtor_agent, t.instruction_id, t.end_to_end_id, t.uetr, t.creditor_agent,
           t.intermediary_agent, t.currency, t.amount_minor::text AS amount_minor,
           t.debtor_name, t.debtor_iban, t.creditor_name, t.creditor_iban,
           t.remittance_information, encode(t.request_digest, 'hex') AS request_digest,
           t.status, t.reason_code, t.reason, t.received_at, t.reserved_at, t.final_at,
           t.expire_at, t.trace_id, t.batch_id::text AS batch_id
      FROM transfers t
      JOIN unnest($2::text[], $3::text[]) AS k(debtor_agent, instruction_id)
        ON t.debtor_agent = k.debtor_agent AND t.instruction_id = k.instruction_id
  ), used_uetrs AS (
    SELECT uetr FROM transfers WHERE uetr = ANY($4::uuid[]) AND reason_code <> 'DUPL'
  ), known_operations AS (
    SELECT request_id, kind, bic, currency, amount_minor::text AS amount_minor,
           encode(request_digest, 'hex') AS request_digest,
           balance_after_minor::text AS balance_after_minor,
           reserved_after_minor::text AS reserved_after_minor,
           debit_cap_after_minor::text AS debit_cap_after_minor,
           batch_id::text AS batch_id, created_at
      FROM position_operations WHERE request_id = ANY($5::text[])
  )
  SELECT nextval('settlement_batch_id_seq')::text AS batch_id,
         (SELECT coalesce(json_agg(l), '[]') FROM locked_participants l) AS participants,
         (SELECT coalesce(json_agg(k), '[]') FROM known_transfers k) AS transfers,
         (SELECT coalesce(json_agg(u.uetr), '[]') FROM used_uetrs u) AS uetrs,
         (SELECT coalesce(json_agg(o), '[]') FROM known_operations o) AS operations`;

const writeBatchSql = `
  WITH batch AS (
    INSERT INTO settlement_batches (id, node_id, operations) VALUES ($1, $2, $3)
  ), new_transfers AS (
    INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent,
      intermediary_agent, currency, amount_minor, debtor_name, debtor_iban, creditor_name,
      creditor_iban, remittance_information, request_digest, status, reason_code, reason,
      received_at, reserved_at, final_at, expire_at, trace_id, batch_id)
    SELECT t.*, $1 FROM unnest($4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[],
      $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[],
      $15::text[], $16::text[], $17::bytea[], $18::text[], $19::text[], $20::text[],
      $21::timestamptz[], $22::timestamptz[], $23::timestamptz[], $24::timestamptz[], $25::text[]) AS t
  ), changed_positions AS (
    UPDATE positions p
       SET balance_minor = u.balance_minor, reserved_minor = u.reserved_minor,
           debit_cap_minor = u.debit_cap_minor, updated_at = u.updated_at
      FROM unnest($26::text[], $27::text[], $28::bigint[], $29::bigint[], $30::bigint[], $31::timestamptz[])
           AS u(bic, currency, balance_minor, reserved_minor, debit_cap_minor, updated_at)
     WHERE p.bic = u.bic AND p.currency = u.currency
  ), sequences AS (
    UPDATE participants p SET confirmation_sequence = u.confirmation_sequence
      FROM unnest($32::text[], $33::bigint[]) AS u(bic, confirmation_sequence)
     WHERE p.bic = u.bic
  ), operations AS (
    INSERT INTO position_operations (request_id, kind, bic, currency, amount_minor, request_digest,
      balance_after_minor, reserved_after_minor, debit_cap_after_minor, created_at, batch_id)
    SELECT o.*, $1 FROM unnest($34::text[], $35::text[], $36::text[], $37::text[], $38::bigint[],
      $39::bytea[], $40::bigint[], $41::bigint[], $42::bigint[], $43::timestamptz[]) AS o
  ), journal AS (
    INSERT INTO journal_entries (currency, account, debit_minor, credit_minor, transfer_debtor_agent,
      transfer_instruction_id, position_request_id, batch_id, created_at)
    SELECT j.*, $1, $50 FROM unnest($44::text[], $45::text[], $46::bigint[], $47::bigint[],
      $48::text[], $49::text[], $51::text[]) AS j
  )
  INSERT INTO confirmations (bic, sequence, debtor_agent, instruction_id, role, status,
    reason_code, reason, final_at, batch_id)
  SELECT c.*, $1 FROM unnest($52::text[], $53::bigint[], $54::text[], $55::text[], $56::text[],
    $57::text[], $58::text[], $59::text[], $60::timestamptz[]) AS c`;

function columns<T, K extends readonly ((row: T) => unknown)[]>(rows: readonly T[], getters: K): unknown[][] {
  const out: unknown[][] = getters.map(() => new Array(rows.length));
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i] as T;
    for (let c = 0; c < getters.length; c++) (out[c] as unknown[])[i] = (getters[c] as (r: T) => unknown)(row);
  }
  return out;
}

const str = (v: bigint) => v.toString();

function writeParameters(batchId: bigint, nodeId: string, w: BatchWrites, now: Date): unknown[] {
  // The journal columns $50 (created_at) and $51 (position request id) sit out
  // of order so the unnest list matches the table's column order.
  const journal = columns(w.journal, [
    (j) => j.currency,
    (j) => j.account,
    (j) => str(j.debitMinor),
    (j) => str(j.creditMinor),
    (j) => j.transferDebtorAgent,
    (j) => j.transferInstructionId,
  ] as const);
  return [
    str(batchId),
    nodeId,
    w.operations,
    ...columns(w.transfers, [
      (t) => t.debtorAgent,
      (t) => t.instructionId,
      (t) => t.endToEndId,
      (t) => t.uetr,
      (t) => t.creditorAgent,
      (t) => t.intermediaryAgent,
      (t) => t.currency,
      (t) => str(t.amountMinor),
      (t) => t.debtorName,
      (t) => t.debtorIban,
      (t) => t.creditorName,
      (t) => t.creditorIban,
      (t) => t.remittanceInformation,
      (t) => t.requestDigest,
      (t) => t.status,
      (t) => t.reasonCode,
      (t) => t.reason,
      (t) => t.receivedAt,
      (t) => t.reservedAt,
      (t) => t.finalAt,
      (t) => t.expireAt,
      (t) => t.traceId,
    ] as const),
    ...columns(w.positions, [
      (p) => p.bic,
      (p) => p.currency,
      (p) => str(p.balanceMinor),
      (p) => str(p.reservedMinor),
      (p) => str(p.debitCapMinor),
      (p) => p.updatedAt,
    ] as const),
    ...columns(w.participantSequences, [(s) => s.bic, (s) => str(s.confirmationSequence)] as const),
    ...columns(w.positionOperations, [
      (o) => o.requestId,
      (o) => o.kind,
      (o) => o.bic,
      (o) => o.currency,
      (o) => str(o.amountMinor),
      (o) => o.requestDigest,
      (o) => str(o.balanceAfterMinor),
      (o) => str(o.reservedAfterMinor),
      (o) => str(o.debitCapAfterMinor),
      (o) => o.createdAt,
    ] as const),
    ...journal,
    now,
    w.journal.map((j) => j.positionRequestId),
    ...columns(w.confirmations, [
      (c) => c.bic,
      (c) => str(c.sequence),
      (c) => c.debtorAgent,
      (c) => c.instructionId,
      (c) => c.role,
      (c) => c.status,
      (c) => c.reasonCode,
      (c) => c.reason,
      (c) => c.finalAt,
    ] as const),
  ];
}

interface RawTransfer {
  debtor_agent: string;
  instruction_id: string;
  end_to_end_id: string;
  uetr: string;
  creditor_agent: string;
  intermediary_agent: string;
  currency: string;
  amount_minor: string;
  debtor_name: string;
  debtor_iban: string;
  creditor_name: string;
  creditor_iban: string;
  remittance_information: string;
  request_digest: string | Buffer;
  status: TransferRow['status'];
  reason_code: string;
  reason: string;
  received_at: string | Date;
  reserved_at: string | Date | null;
  final_at: string | Date | null;
  expire_at: string | Date | null;
  trace_id: string;
  batch_id: string;
}

const date = (v: string | Date) => (v instanceof Date ? v : new Date(v));
const dateOrNull = (v: string | Date | null) => (v === null ? null : date(v));

/** Maps a transfers row (from JSON or from a plain query) to a TransferRow. */
export function transferFromRaw(r: RawTransfer): TransferRow {
  return {
    debtorAgent: r.debtor_agent,
    instructionId: r.instruction_id,
    endToEndId: r.end_to_end_id,
    uetr: r.uetr,
    creditorAgent: r.creditor_agent,
    intermediaryAgent: r.intermediary_agent,
    currency: r.currency,
    amountMinor: BigInt(r.amount_minor),
    debtorName: r.debtor_name,
    debtorIban: r.debtor_iban,
    creditorName: r.creditor_name,
    creditorIban: r.creditor_iban,
    remittanceInformation: r.remittance_information,
    requestDigest: Buffer.isBuffer(r.request_digest) ? r.request_digest : Buffer.from(r.request_digest, 'hex'),
    status: r.status,
    reasonCode: r.reason_code,
    reason: r.reason,
    receivedAt: date(r.received_at),
    reservedAt: dateOrNull(r.reserved_at),
    finalAt: dateOrNull(r.final_at),
    expireAt: dateOrNull(r.expire_at),
    traceId: r.trace_id,
    batchId: BigInt(r.batch_id),
  };
}

/** The SELECT list that transferFromRaw reads, for plain queries on `transfers t`. */
export const transferColumns = `t.debtor_agent, t.instruction_id, t.end_to_end_id, t.uetr::text AS uetr,
  t.creditor_agent, t.intermediary_agent, t.currency, t.amount_minor::text AS amount_minor,
  t.debtor_name, t.debtor_iban, t.creditor_name, t.creditor_iban, t.remittance_information,
  t.request_digest, t.status, t.reason_code, t.reason, t.received_at, t.reserved_at, t.final_at,
  t.expire_at, t.trace_id, t.batch_id::text AS batch_id`;

function readSnapshot(batchId: string, positions: pg.QueryResult, raw: Record<string, unknown>): BatchSnapshot {
  const participants = raw.participants as {
    bic: string;
    kind: ParticipantLockRow['kind'];
    status: ParticipantLockRow['status'];
    acceptance_mode: ParticipantLockRow['acceptanceMode'];
    confirmation_sequence: string;
  }[];
  const operations = raw.operations as {
    request_id: string;
    kind: PositionOperationRow['kind'];
    bic: string;
    currency: string;
    amount_minor: string;
    request_digest: string;
    balance_after_minor: string;
    reserved_after_minor: string;
    debit_cap_after_minor: string;
    batch_id: string;
    created_at: string;
  }[];
  return {
    batchId: BigInt(batchId),
    positions: positions.rows.map(
      (r): PositionRow => ({
        bic: r.bic,
        currency: r.currency,
        balanceMinor: BigInt(r.balance_minor),
        reservedMinor: BigInt(r.reserved_minor),
        debitCapMinor: BigInt(r.debit_cap_minor),
        updatedAt: r.updated_at,
      }),
    ),
    participants: participants.map((p) => ({
      bic: p.bic,
      kind: p.kind,
      status: p.status,
      acceptanceMode: p.acceptance_mode,
      confirmationSequence: BigInt(p.confirmation_sequence),
    })),
    transfers: (raw.transfers as RawTransfer[]).map(transferFromRaw),
    uetrsInUse: raw.uetrs as string[],
    positionOperations: operations.map((o) => ({
      requestId: o.request_id,
      kind: o.kind,
      bic: o.bic,
      currency: o.currency,
      amountMinor: BigInt(o.amount_minor),
      requestDigest: Buffer.from(o.request_digest, 'hex'),
      balanceAfterMinor: BigInt(o.balance_after_minor),
      reservedAfterMinor: BigInt(o.reserved_after_minor),
      debitCapAfterMinor: BigInt(o.debit_cap_after_minor),
      batchId: BigInt(o.batch_id),
      createdAt: new Date(o.created_at),
    })),
  };
}

/**
 * Runs one settlement batch in one transaction: lock, read, `decide` (pure,
 * synchronous), write, commit. Returns what `decide` returned, only after COMMIT.
 * Throws the database's error untouched; the caller decides whether to retry.
 */
export async function runSettlementBatch<R>(
  pool: pg.Pool,
  nodeId: string,
  keys: BatchKeys,
  decide: (snapshot: BatchSnapshot) => { writes: BatchWrites; result: R },
): Promise<R> {
  const client = await pool.connect();
  let broken: unknown;
  try {
    await client.query('BEGIN');
    const positions = await client.query({
      name: 'settlement_lock_positions',
      text: lockPositionsSql,
      values: [keys.positions.map((k) => k.bic), keys.positions.map((k) => k.currency)],
    });
    const snapshotRows = await client.query({
      name: 'settlement_read_snapshot',
      text: readSnapshotSql,
      values: [
        keys.participants,
        keys.instructions.map((k) => k.debtorAgent),
        keys.instructions.map((k) => k.instructionId),
        keys.uetrs,
        keys.requestIds,
      ],
    });
    const raw = snapshotRows.rows[0] as Record<string, unknown>;
    const snapshot = readSnapshot(raw.batch_id as string, positions, raw);
    const { writes, result } = decide(snapshot);
    if (writes.operations > 0) {
      await client.query({
        name: 'settlement_write_batch',
        text: writeBatchSql,
        values: writeParameters(snapshot.batchId, nodeId, writes, new Date()),
      });
    }
    await client.query('COMMIT');
    return result;
  } catch (error) {
    broken = error;
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    // A connection that failed mid-transaction is discarded rather than reused.
    client.release(broken !== undefined && !(broken instanceof pg.DatabaseError) ? (broken as Error) : undefined);
  }
}

/** SQLSTATEs after which the same batch may simply run again. */
const retryableStates = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '23505', // unique_violation: another node stored the same instruction id or UETR first
]);

export function isRetryableSettlementError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && retryableStates.has((error as { code?: string }).code ?? '');
}
