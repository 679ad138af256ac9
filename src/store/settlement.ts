// The settlement transaction: one Postgres transaction per batch of operations.
//
//   BEGIN
//   1. lock the participants the batch touches, sorted by BIC
//   2. read their positions and what the batch must check (instruction ids,
//      UETRs, request ids already used) — a new statement, so it sees every
//      batch that committed before our locks were granted
//   3. the caller decides every operation against that snapshot (no I/O)
//   4. write transfers, positions, journal, operations, confirmations: one statement
//   COMMIT
//
// Large batches may instead be decided before their locks are taken, against
// what the node's own batches left in the rows, and sent as one round trip
// (BEGIN, settlement_expect: the same sorted locks plus a check that every row
// is as expected, the write, COMMIT): runExpectedSettlementBatch below.
//
// One lock per participant guards its positions too: every change to a
// position goes through a settlement batch, and every batch locks the
// participants of every position it changes. Sorted order means two batches
// (in this process or another node process) never wait on each other in a
// cycle. FOR NO KEY UPDATE: batches change counters, never keys, so other
// transactions' foreign-key checks (FOR KEY SHARE) need not wait.
import assert from 'node:assert/strict';
import type pg from 'pg';
import { binaryArray, type BinaryElementType, type BinaryElementValue } from './binary-arrays.js';
import { queryInOrder, sendInOrder, settleInOrder, withClient } from './client.js';
import type {
  BatchKeys,
  BatchSnapshot,
  BatchWrites,
  ExpectedRows,
  JournalRow,
  ParticipantLockRow,
  PositionOperationRow,
  PositionRow,
  TransferConfirmationSequences,
  TransferRow,
} from './rows.js';

const lockParticipantsSql = `
  SELECT bic, kind, status, acceptance_mode, confirmation_sequence::text AS confirmation_sequence,
         inbound_sequence::text AS inbound_sequence
    FROM participants WHERE bic = ANY($1::text[])
   ORDER BY bic
     FOR NO KEY UPDATE`;

// Bigints travel as text inside JSON: JSON numbers would lose precision.
export const readSnapshotSql = `
  WITH current_positions AS (
    SELECT p.bic, p.currency, p.balance_minor::text AS balance_minor, p.reserved_minor::text AS reserved_minor,
           p.debit_cap_minor::text AS debit_cap_minor, p.updated_at
      FROM unnest($1::text[], $6::text[]) AS k(bic, currency)
      JOIN positions p ON p.bic = k.bic AND p.currency = k.currency
  ), known_transfers AS (
    -- LATERAL: one primary-key probe per instruction, whatever the planner's
    -- statistics say (a fresh table without them got a hash join over a full scan).
    SELECT t.debtor_agent, t.instruction_id, t.end_to_end_id, t.uetr, t.creditor_agent,
           t.intermediary_agent, t.currency, t.amount_minor::text AS amount_minor,
           t.debtor_name, t.debtor_iban, t.creditor_name, t.creditor_iban,
           t.remittance_information, encode(t.request_digest, 'hex') AS request_digest,
           t.status, t.reason_code, t.reason, t.received_at, t.reserved_at, t.final_at,
           t.expire_at, t.trace_id, t.creditor_sequence::text AS creditor_sequence,
           t.batch_id::text AS batch_id
      FROM unnest($2::text[], $3::text[]) AS k(debtor_agent, instruction_id)
      CROSS JOIN LATERAL (
        SELECT * FROM transfers x WHERE x.debtor_agent = k.debtor_agent AND x.instruction_id = k.instruction_id
      ) t
  ), used_uetrs AS (
    SELECT u.uetr FROM unnest($4::uuid[]) AS k(uetr)
      CROSS JOIN LATERAL (SELECT x.uetr FROM transfers x WHERE x.uetr = k.uetr AND x.reason_code <> 'DUPL') u
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
         (SELECT coalesce(json_agg(c), '[]') FROM current_positions c) AS positions,
         (SELECT coalesce(json_agg(k), '[]') FROM known_transfers k) AS transfers,
         (SELECT coalesce(json_agg(u.uetr), '[]') FROM used_uetrs u) AS uetrs,
         (SELECT coalesce(json_agg(o), '[]') FROM known_operations o) AS operations`;

// Every statement of a settlement batch looks rows up by key: the plan must
// be index probes in nested loops, whatever the planner believes about table
// sizes. It believed wrong: statistics from when a table was small (after
// migrating, or before autovacuum's next ANALYZE), and generic plans cached
// while it was small, gave hash joins over whole-table scans that grew with
// the table — measured 8.2 ms per ~55-transfer batch for the snapshot read,
// against ~1 ms as index probes. So the transaction plans each statement for
// its parameters (custom plans, as the node's connections do anyway: see
// createPool) with the other join and scan methods off, and the plans stay
// probes. SET LOCAL scopes this to the transaction; one round trip with BEGIN.
export const beginSettlementSql =
  'BEGIN; SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_seqscan = off; ' +
  'SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off';

/** The channel on which committed batches announce `inbound:<BIC>` and `confirmations:<BIC>`. */
export const eventsChannel = 'clearing_events';

/** Who runs a batch: the node (recorded on the batch) and the node instance its notifications come from. */
export interface SettlementOrigin {
  nodeId: string;
  /**
   * Unique per running node instance. A node wakes its own streams right after
   * its COMMIT, so it skips the notifications that carry its own source.
   */
  notificationSource: string;
}

/** A payload on the events channel: `<source> <topic>`. */
function notificationPayload(source: string, topic: string): string {
  return `${source} ${topic}`;
}

/**
 * The source and topic of a payload on the events channel. A bare topic (as
 * nodes before sources sent, during a rolling upgrade) has no source.
 */
export function parseNotification(payload: string): { source: string; topic: string } {
  const space = payload.indexOf(' ');
  if (space <= 0) return { source: '', topic: payload };
  return { source: payload.slice(0, space), topic: payload.slice(space + 1) };
}

/** The columns of a new transfer, in the order writeBatch sends them. */
const transferInsertColumns = `debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent,
      intermediary_agent, currency, amount_minor, debtor_name, debtor_iban, creditor_name,
      creditor_iban, remittance_information, request_digest, status, reason_code, reason,
      received_at, reserved_at, final_at, expire_at, trace_id, creditor_sequence`;

/**
 * A transfer's confirmation sequence numbers, kept on its row too, so that
 * InspectTransfer finds its confirmations by their primary key (migration 0004).
 */
const confirmationColumns = 'debtor_confirmation, creditor_confirmation, intermediary_confirmation';

/**
 * The journal entries a batch sends whole: those of liquidity transfers. A
 * transfer's entry is derived in SQL (derivedInserts); asserts that the batch
 * has one for each settled transfer, and each confirmation a sequence number
 * in transferConfirmations or finalizedConfirmations.
 */
function entriesSentWhole(w: BatchWrites): JournalRow[] {
  const sent = w.journal.filter((j) => j.positionRequestId !== null);
  let settled = 0;
  for (const t of w.transfers) if (t.status === 'SETTLED') settled += 1;
  for (const t of w.finalizedTransfers) if (t.status === 'SETTLED') settled += 1;
  assert(w.journal.length - sent.length === settled, 'one journal entry per settled transfer');
  let numbered = 0;
  for (const sequences of [w.transferConfirmations, w.finalizedConfirmations]) {
    for (const list of [sequences.debtor, sequences.creditor, sequences.intermediary]) for (const n of list) if (n !== null) numbered += 1;
  }
  assert(numbered === w.confirmations.length, 'every confirmation numbered for its transfer');
  assert(w.transferConfirmations.debtor.length === w.transfers.length && w.finalizedConfirmations.debtor.length === w.finalizedTransfers.length,
    'sequence numbers aligned with their transfers');
  return sent;
}

/**
 * The journal entries and confirmations of the transfers in `rows` (a CTE
 * with the transfers' parties, amount, status, reason, final time and their
 * confirmation sequence numbers), as decideBatch's settle() and confirm()
 * made them.
 */
function derivedInserts(rows: string, batch: string, createdAt: () => string): string[] {
  return [
    `${rows}_journal AS (
    INSERT INTO journal_entries (currency, debit_account, credit_account, amount_minor, transfer_debtor_agent,
      transfer_instruction_id, position_request_id, batch_id, created_at)
    SELECT currency, debtor_agent, creditor_agent, amount_minor, debtor_agent, instruction_id, NULL, ${batch}, ${createdAt()}
      FROM ${rows} WHERE status = 'SETTLED'
  )`,
    `${rows}_confirmations AS (
    INSERT INTO confirmations (bic, sequence, debtor_agent, instruction_id, role, status,
      reason_code, reason, final_at, batch_id)
    SELECT c.bic, c.sequence, r.debtor_agent, r.instruction_id, c.role, r.status, r.reason_code, r.reason, r.final_at, ${batch}
      FROM ${rows} r
     CROSS JOIN LATERAL (VALUES (r.debtor_agent, r.debtor_confirmation, 'DEBTOR'),
                               (r.creditor_agent, r.creditor_confirmation, 'CREDITOR'),
                               (r.intermediary_agent, r.intermediary_confirmation, 'INTERMEDIARY')) AS c(bic, sequence, role)
     WHERE c.sequence IS NOT NULL
  )`,
  ];
}

/** One column of an unnest: its element type, and how to read it off a row. */
type Column<T> = {
  [K in BinaryElementType]: [type: K, get: (row: T, index: number) => BinaryElementValue[K] | null];
}[BinaryElementType];

function column<T, K extends BinaryElementType>(type: K, get: (row: T, index: number) => BinaryElementValue[K] | null): Column<T> {
  return [type, get] as Column<T>;
}

/**
 * Builds the write statement and its parameters together: every column is one
 * array parameter, unnested set-based. The text depends only on which parts
 * the batch has, so it is prepared once per connection under one name per shape.
 */
export function writeBatch(
  batchId: bigint,
  origin: SettlementOrigin,
  w: BatchWrites,
  now: Date,
): { text: string; values: unknown[]; name: string } {
  const values: unknown[] = [];
  const param = (value: unknown, cast: string) => {
    values.push(value);
    return `$${values.length}::${cast}`;
  };
  // Every column an array in Postgres' binary format (binary-arrays.ts says why).
  // Column<T> ties each getter to its type; TypeScript cannot follow that tie
  // through the union, hence the cast.
  const unnest = <T>(rows: readonly T[], cols: Column<T>[]) =>
    `unnest(${cols.map(([type, get]) => param(binaryArray(type, rows, get as (row: T, index: number) => never), `${type}[]`)).join(', ')})`;
  const batch = param(batchId.toString(), 'bigint');

  // Only the parts this batch needs: less to plan and run. Each combination
  // of parts (at most 2^6) is its own prepared statement.
  const ctes: string[] = [];
  let shape = '';
  ctes.push(`batch AS (
    INSERT INTO settlement_batches (id, node_id, operations)
    VALUES (${batch}, ${param(origin.nodeId, 'text')}, ${param(w.operations, 'integer')})
  )`);
  // The journal entries and confirmations of the batch's new transfers are
  // derived in SQL from the transfers' own columns, as decideBatch made them
  // (settle(): debtor to creditor, the amount; confirm(): the transfer's
  // status, reason and final time), so only their sequence numbers travel:
  // a 1,000-transfer batch sent ~48,000 array elements, about half of them
  // for these rows, and Postgres parses them (Bind) while the batch holds its
  // locks. The same for transfers the batch finalizes (from the UPDATE's
  // RETURNING); liquidity transfers' entries still travel whole, below.
  const journalSentWhole = entriesSentWhole(w);
  // The journal's time, sent once and only when some entry needs it (an
  // unused parameter has no type, which Postgres refuses).
  let createdAtParam: string | undefined;
  const createdAt = () => (createdAtParam ??= param(now, 'timestamptz'));
  // The confirmation sequence numbers of a list of transfers, as three more columns of it.
  const sequenceColumns = <T>(sequences: TransferConfirmationSequences): Column<T>[] =>
    [sequences.debtor, sequences.creditor, sequences.intermediary].map((numbers) =>
      column<T, 'bigint'>('bigint', (_row, index) => numbers[index] ?? null),
    );
  if (w.transfers.length > 0) {
    shape += 'n';
    const newTransfer = unnest<TransferRow>(w.transfers, [
      ['text', (t) => t.debtorAgent],
      ['text', (t) => t.instructionId],
      ['text', (t) => t.endToEndId],
      ['uuid', (t) => t.uetr],
      ['text', (t) => t.creditorAgent],
      ['text', (t) => t.intermediaryAgent],
      ['text', (t) => t.currency],
      ['bigint', (t) => t.amountMinor],
      ['text', (t) => t.debtorName],
      ['text', (t) => t.debtorIban],
      ['text', (t) => t.creditorName],
      ['text', (t) => t.creditorIban],
      ['text', (t) => t.remittanceInformation],
      ['bytea', (t) => t.requestDigest],
      ['text', (t) => t.status],
      ['text', (t) => t.reasonCode],
      ['text', (t) => t.reason],
      ['timestamptz', (t) => t.receivedAt],
      ['timestamptz', (t) => t.reservedAt],
      ['timestamptz', (t) => t.finalAt],
      ['timestamptz', (t) => t.expireAt],
      ['text', (t) => t.traceId],
      ['bigint', (t) => t.creditorSequence],
      ...sequenceColumns<TransferRow>(w.transferConfirmations),
    ]);
    ctes.push(`new_rows AS (
    SELECT * FROM ${newTransfer}
      AS t(${transferInsertColumns}, ${confirmationColumns})
  )`);
    ctes.push(`new_transfers AS (
    INSERT INTO transfers (${transferInsertColumns}, ${confirmationColumns}, batch_id)
    SELECT ${transferInsertColumns}, ${confirmationColumns}, ${batch} FROM new_rows
  )`);
    ctes.push(...derivedInserts('new_rows', batch, createdAt));
  }
  if (w.finalizedTransfers.length > 0) {
    shape += 'f';
    const finalizing = unnest<TransferRow>(w.finalizedTransfers, [
      ['text', (t) => t.debtorAgent],
      ['text', (t) => t.instructionId],
      ['text', (t) => t.status],
      ['text', (t) => t.reasonCode],
      ['text', (t) => t.reason],
      ['timestamptz', (t) => t.finalAt],
      ...sequenceColumns<TransferRow>(w.finalizedConfirmations),
    ]);
    // RETURNING the finalized rows: their entries and confirmations are
    // derived from what the UPDATE changed.
    ctes.push(`finalized_rows AS (
    UPDATE transfers t
       SET status = f.status, reason_code = f.reason_code, reason = f.reason, final_at = f.final_at,
           debtor_confirmation = f.debtor_confirmation, creditor_confirmation = f.creditor_confirmation,
           intermediary_confirmation = f.intermediary_confirmation, batch_id = ${batch}
      FROM ${finalizing}
        AS f(debtor_agent, instruction_id, status, reason_code, reason, final_at,
             debtor_confirmation, creditor_confirmation, intermediary_confirmation)
     WHERE t.debtor_agent = f.debtor_agent AND t.instruction_id = f.instruction_id
       -- Still RESERVED (final_at IS NULL exactly then, by a CHECK). Not written as
       -- status = 'RESERVED': that matches the partial indexes of reserved transfers,
       -- and with stale statistics the plan scanned all reserved transfers per batch.
       AND t.final_at IS NULL
    RETURNING t.debtor_agent, t.instruction_id, t.creditor_agent, t.intermediary_agent, t.currency, t.amount_minor,
              t.status, t.reason_code, t.reason, t.final_at,
              f.debtor_confirmation, f.creditor_confirmation, f.intermediary_confirmation
  )`);
    ctes.push(...derivedInserts('finalized_rows', batch, createdAt));
  }
  if (w.positions.length > 0) {
    shape += 'p';
    ctes.push(`changed_positions AS (
    UPDATE positions p
       SET balance_minor = u.balance_minor, reserved_minor = u.reserved_minor,
           debit_cap_minor = u.debit_cap_minor, updated_at = u.updated_at
      FROM ${unnest<PositionRow>(w.positions, [
        ['text', (p) => p.bic],
        ['text', (p) => p.currency],
        ['bigint', (p) => p.balanceMinor],
        ['bigint', (p) => p.reservedMinor],
        ['bigint', (p) => p.debitCapMinor],
        ['timestamptz', (p) => p.updatedAt],
      ])} AS u(bic, currency, balance_minor, reserved_minor, debit_cap_minor, updated_at)
     WHERE p.bic = u.bic AND p.currency = u.currency
  )`);
  }
  if (w.participantSequences.length > 0) {
    shape += 's';
    ctes.push(`sequences AS (
    UPDATE participants p
       SET confirmation_sequence = u.confirmation_sequence, inbound_sequence = u.inbound_sequence
      FROM ${unnest<BatchWrites['participantSequences'][number]>(w.participantSequences, [
        ['text', (q) => q.bic],
        ['bigint', (q) => q.confirmationSequence],
        ['bigint', (q) => q.inboundSequence],
      ])} AS u(bic, confirmation_sequence, inbound_sequence)
     WHERE p.bic = u.bic
  )`);
  }
  if (w.positionOperations.length > 0) {
    shape += 'o';
    ctes.push(`operations AS (
    INSERT INTO position_operations (request_id, kind, bic, currency, amount_minor, request_digest,
      balance_after_minor, reserved_after_minor, debit_cap_after_minor, created_at, batch_id)
    SELECT o.*, ${batch} FROM ${unnest<PositionOperationRow>(w.positionOperations, [
      ['text', (o) => o.requestId],
      ['text', (o) => o.kind],
      ['text', (o) => o.bic],
      ['text', (o) => o.currency],
      ['bigint', (o) => o.amountMinor],
      ['bytea', (o) => o.requestDigest],
      ['bigint', (o) => o.balanceAfterMinor],
      ['bigint', (o) => o.reservedAfterMinor],
      ['bigint', (o) => o.debitCapAfterMinor],
      ['timestamptz', (o) => o.createdAt],
    ])} AS o
  )`);
  }
  if (journalSentWhole.length > 0) {
    shape += 'j';
    ctes.push(`journal AS (
    INSERT INTO journal_entries (currency, debit_account, credit_account, amount_minor, transfer_debtor_agent,
      transfer_instruction_id, position_request_id, batch_id, created_at)
    SELECT j.*, ${batch}, ${createdAt()} FROM ${unnest<JournalRow>(journalSentWhole, [
      ['text', (j) => j.currency],
      ['text', (j) => j.debitAccount],
      ['text', (j) => j.creditAccount],
      ['bigint', (j) => j.amountMinor],
      ['text', (j) => j.transferDebtorAgent],
      ['text', (j) => j.transferInstructionId],
      ['text', (j) => j.positionRequestId],
    ])} AS j
  )`);
  }
  const text = `
  WITH ${ctes.join(', ')}
  -- NOTIFY is delivered at COMMIT, so listeners never hear of uncommitted work.
  SELECT count(pg_notify('${eventsChannel}', n)) FROM unnest(${param(
    binaryArray('text', w.notifications, (topic) => notificationPayload(origin.notificationSource, topic)),
    'text[]',
  )}) AS n`;
  return { text, values, name: `settlement_write_batch_${shape}` };
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
  creditor_sequence: string | null;
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
    creditorSequence: r.creditor_sequence === null ? null : BigInt(r.creditor_sequence),
    batchId: BigInt(r.batch_id),
  };
}

/** The SELECT list that transferFromRaw reads, for plain queries on `transfers t`. */
export const transferColumns = `t.debtor_agent, t.instruction_id, t.end_to_end_id, t.uetr::text AS uetr,
  t.creditor_agent, t.intermediary_agent, t.currency, t.amount_minor::text AS amount_minor,
  t.debtor_name, t.debtor_iban, t.creditor_name, t.creditor_iban, t.remittance_information,
  t.request_digest, t.status, t.reason_code, t.reason, t.received_at, t.reserved_at, t.final_at,
  t.expire_at, t.trace_id, t.creditor_sequence::text AS creditor_sequence, t.batch_id::text AS batch_id`;

/** The parameters of readSnapshotSql for a batch's keys, in binary (binary-arrays.ts). */
function snapshotValues(keys: BatchKeys): unknown[] {
  return [
    binaryArray('text', keys.positions, (k) => k.bic),
    binaryArray('text', keys.instructions, (k) => k.debtorAgent),
    binaryArray('text', keys.instructions, (k) => k.instructionId),
    binaryArray('uuid', keys.uetrs, (uetr) => uetr),
    binaryArray('text', keys.requestIds, (id) => id),
    binaryArray('text', keys.positions, (k) => k.currency),
  ];
}

function readSnapshot(batchId: string, locked: pg.QueryResult['rows'], raw: Record<string, unknown>): BatchSnapshot {
  const positions = raw.positions as {
    bic: string;
    currency: string;
    balance_minor: string;
    reserved_minor: string;
    debit_cap_minor: string;
    updated_at: string;
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
    positions: positions.map(
      (r): PositionRow => ({
        bic: r.bic,
        currency: r.currency,
        balanceMinor: BigInt(r.balance_minor),
        reservedMinor: BigInt(r.reserved_minor),
        debitCapMinor: BigInt(r.debit_cap_minor),
        updatedAt: new Date(r.updated_at),
      }),
    ),
    participants: locked.map(
      (p): ParticipantLockRow => ({
        bic: p.bic,
        kind: p.kind,
        status: p.status,
        acceptanceMode: p.acceptance_mode,
        confirmationSequence: BigInt(p.confirmation_sequence),
        inboundSequence: BigInt(p.inbound_sequence),
      }),
    ),
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
 *
 * Two round trips, and two trips through this process's event loop, while
 * the locks are held, not five: BEGIN, the lock and the read go out together
 * (pipelined), then the write and COMMIT (queryInOrder). The read is still its
 * own statement after the lock's, so it sees every batch that committed before
 * our locks were granted.
 */
export async function runSettlementBatch<R>(
  pool: pg.Pool,
  origin: SettlementOrigin,
  keys: BatchKeys,
  decide: (snapshot: BatchSnapshot) => { writes: BatchWrites; result: R },
): Promise<R> {
  return withClient(pool, async (client) => {
    try {
      const [, locked, snapshotRows] = await queryInOrder(client, [
        beginSettlementSql,
        { name: 'settlement_lock_participants', text: lockParticipantsSql, values: [binaryArray('text', keys.participants, (bic) => bic)] },
        {
          name: 'settlement_read_snapshot',
          text: readSnapshotSql,
          values: snapshotValues(keys),
        },
      ]);
      const raw = (snapshotRows as pg.QueryResult).rows[0] as Record<string, unknown>;
      const snapshot = readSnapshot(raw.batch_id as string, (locked as pg.QueryResult).rows, raw);
      const { writes, result } = decide(snapshot);
      if (writes.operations > 0) {
        const { text, values, name } = writeBatch(snapshot.batchId, origin, writes, new Date());
        await queryInOrder(client, [{ name, text, values }, 'COMMIT']);
      } else {
        await client.query('COMMIT');
      }
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}

const expectSql = `SELECT settlement_expect($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
  $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[])`;

/** Batch ids fetched from settlement_batch_id_seq in one round trip, for batches that skip their read. */
export const batchIdsPerFetch = 64;
/** Fetches one batch may wait for or make before it gives up (others' blocks used up, or failed). */
const batchIdFetchAttemptsMax = 8;

/**
 * Hands out batch ids taken from the sequence a block at a time: a batch
 * decided ahead without reading what is stored still needs its id before it
 * decides (every row it writes carries it). Ids only identify batches; a
 * block this node does not use up leaves a gap, as a refused batch does.
 */
export class BatchIds {
  private ids: bigint[] = [];
  private fetching: Promise<void> | undefined;

  /**
   * On the batch's own connection: waiting for another from the pool could
   * wait for a batch that waits here. A batch waiting for another batch's
   * fetch that fails fetches on its own connection instead, so one lost
   * connection fails only its own batch.
   */
  async next(client: pg.PoolClient): Promise<bigint> {
    for (let attempt = 0; this.ids.length === 0; attempt++) {
      if (attempt >= batchIdFetchAttemptsMax) throw new Error(`no batch id after ${batchIdFetchAttemptsMax} fetches of ${batchIdsPerFetch}`);
      const inFlight = this.fetching;
      if (inFlight !== undefined) {
        await inFlight;
        continue;
      }
      const own = client
        .query({
          name: 'settlement_batch_ids',
          text: `SELECT nextval('settlement_batch_id_seq')::text AS id FROM generate_series(1, $1::int)`,
          values: [batchIdsPerFetch],
        })
        .then((result) => {
          for (const row of result.rows) this.ids.push(BigInt(row.id as string));
        });
      // Settles either way: a failure is this batch's to throw (below), and
      // the others waiting for it fetch again.
      this.fetching = own
        .catch(() => undefined)
        .finally(() => {
          this.fetching = undefined;
        });
      await own;
    }
    return this.ids.shift() as bigint;
  }
}

/**
 * Runs one settlement batch decided against what `expect` returns, the
 * participants and positions as this node's earlier batches left them,
 * instead of against a read under the locks (migration 0003 says why). Two
 * round trips, neither holding locks across the node's event loop:
 *
 *   1. BEGIN, read what the batch must check (instruction ids, UETRs, request
 *      ids already used; no positions, no locks), COMMIT
 *   2. `expect` (undefined: nothing more is done, `ran: false`), `decide`, then
 *      BEGIN, settlement_expect (lock, sorted, and compare with the expected
 *      rows), write, COMMIT — pipelined
 *
 * If anything differs, settlement_expect aborts with serialization_failure
 * and nothing is written. An instruction id, UETR or request id taken after
 * step 1 (by another batch in flight) fails the write's unique indexes the
 * same way. Either way the caller decides again with runSettlementBatch.
 *
 * With `stored` as 'assumed-none' (a batch of new transfers only), step 1 is
 * skipped: the batch is decided as if none of its instruction ids and UETRs
 * were stored, its id from `batchIds`. The write's unique indexes check that
 * assumption, and a replay or a reused UETR fails the write with 23505: the
 * caller then decides again under the locks, which answers the replay and
 * rejects the reuse. Measured: step 1 is ~7 ms of Postgres per 1,000
 * transfers, and replays are rare.
 *
 * A replay (an instruction id already stored) is answered from what step 1
 * read: a transfer still RESERVED then may have been finished since by a
 * batch not yet committed at the time, which a read under the locks would
 * have shown. Both answers are statuses the transfer had; a later replay
 * shows the final one. Step 1 also takes the batch id, so a refused attempt
 * leaves a gap in batch ids, which only identify batches (nothing reads
 * their order).
 */
export async function runExpectedSettlementBatch<R>(
  pool: pg.Pool,
  origin: SettlementOrigin,
  keys: BatchKeys,
  expect: () => Promise<ExpectedRows | undefined>,
  decide: (snapshot: BatchSnapshot) => { writes: BatchWrites; result: R },
  progress: {
    /** Called once settlement_expect has answered: no argument when it holds the locks and found what was expected, else its error. */
    locked: (failure?: unknown) => void;
    /** Called as soon as the write fails (before the transaction's end is read), with its error. */
    writeFailed: (error: unknown) => void;
  },
  stored: { kind: 'read' } | { kind: 'assumed-none'; batchIds: BatchIds },
): Promise<{ ran: true; result: R } | { ran: false }> {
  assert(stored.kind === 'read' || keys.requestIds.length === 0, 'liquidity transfers are checked against what is stored');
  return withClient(pool, async (client) => {
    try {
      let snapshot: BatchSnapshot;
      if (stored.kind === 'read') {
        const [, snapshotRows] = await queryInOrder(client, [
          beginSettlementSql,
          { name: 'settlement_read_snapshot', text: readSnapshotSql, values: snapshotValues({ ...keys, positions: [] }) },
          'COMMIT',
        ]);
        const raw = (snapshotRows as pg.QueryResult).rows[0] as Record<string, unknown>;
        snapshot = readSnapshot(raw.batch_id as string, [], raw);
      } else {
        const batchId = await stored.batchIds.next(client);
        snapshot = { batchId, positions: [], participants: [], transfers: [], uetrsInUse: [], positionOperations: [] };
      }
      const expected = await expect();
      if (expected === undefined) return { ran: false };
      snapshot.participants = expected.participants;
      snapshot.positions = expected.positions;
      const { writes, result } = decide(snapshot);
      // Only replays: answered from what step 1 read, all of it committed.
      if (writes.operations === 0) return { ran: true, result };
      const p = expected.participants;
      const q = expected.positions;
      const write = writeBatch(snapshot.batchId, origin, writes, new Date());
      const sent = sendInOrder(client, [
        beginSettlementSql,
        {
          name: 'settlement_expect',
          text: expectSql,
          values: [
            binaryArray('text', p, (r) => r.bic),
            binaryArray('text', p, (r) => r.kind),
            binaryArray('text', p, (r) => r.status),
            binaryArray('text', p, (r) => r.acceptanceMode),
            binaryArray('bigint', p, (r) => r.confirmationSequence),
            binaryArray('bigint', p, (r) => r.inboundSequence),
            binaryArray('text', q, (r) => r.bic),
            binaryArray('text', q, (r) => r.currency),
            binaryArray('bigint', q, (r) => r.balanceMinor),
            binaryArray('bigint', q, (r) => r.reservedMinor),
            binaryArray('bigint', q, (r) => r.debitCapMinor),
          ],
        },
        write,
        'COMMIT',
      ]);
      (sent[1] as Promise<pg.QueryResult>).then(
        () => progress.locked(),
        (error: unknown) => progress.locked(error ?? new Error('settlement_expect failed')),
      );
      (sent[2] as Promise<pg.QueryResult>).then(undefined, (error: unknown) => progress.writeFailed(error));
      await settleInOrder(sent);
      return { ran: true, result };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}

/** SQLSTATEs after which the same batch may simply run again. */
const retryableStates = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '23505', // unique_violation: another node stored the same instruction id or UETR first
  '55P03', // lock_not_available: lock_timeout passed waiting for a row another node holds
]);

export function isRetryableSettlementError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && retryableStates.has((error as { code?: string }).code ?? '');
}
