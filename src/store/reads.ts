// Read-only SQL: positions, transfers, reconciliation. One function per statement.
import type pg from 'pg';
import { transferColumns, transferFromRaw } from './settlement.js';
import { inTransaction } from './client.js';
import type { PositionRow, TransferRow, TransferStatusName } from './rows.js';


const positionColumns = `bic, currency, balance_minor::text, reserved_minor::text, debit_cap_minor::text, updated_at`;

function positionFromRow(r: Record<string, unknown>): PositionRow {
  return {
    bic: r.bic as string,
    currency: r.currency as string,
    balanceMinor: BigInt(r.balance_minor as string),
    reservedMinor: BigInt(r.reserved_minor as string),
    debitCapMinor: BigInt(r.debit_cap_minor as string),
    updatedAt: r.updated_at as Date,
  };
}

/** A participant's positions ordered by currency; all of them when `currency` is empty. */
export async function selectPositionsOf(db: pg.Pool, bic: string, currency: string): Promise<PositionRow[]> {
  const result = await db.query({
    name: 'positions_of',
    text: `SELECT ${positionColumns} FROM positions WHERE bic = $1 AND ($2 = '' OR currency = $2) ORDER BY currency`,
    values: [bic, currency],
  });
  return result.rows.map(positionFromRow);
}

/** One page of positions ordered by (bic, currency) after the given key, optionally filtered. */
export async function selectPositionsPage(
  db: pg.Pool,
  filter: { bic: string; currency: string },
  after: { bic: string; currency: string },
  limit: number,
): Promise<PositionRow[]> {
  const result = await db.query({
    name: 'positions_page',
    text: `SELECT ${positionColumns} FROM positions
            WHERE ($1 = '' OR bic = $1) AND ($2 = '' OR currency = $2) AND (bic, currency) > ($3, $4)
            ORDER BY bic, currency LIMIT $5`,
    values: [filter.bic, filter.currency, after.bic, after.currency, limit],
  });
  return result.rows.map(positionFromRow);
}

/** Transfers carrying this UETR: the original first, then DUPL rejections of later reuses. */
export async function selectTransfersByUetr(db: pg.Pool, uetr: string): Promise<TransferRow[]> {
  // Two branches so each uses its partial index (the original's is unique).
  const result = await db.query({
    name: 'transfers_by_uetr',
    text: `(SELECT ${transferColumns} FROM transfers t WHERE t.uetr = $1 AND t.reason_code <> 'DUPL')
           UNION ALL
           (SELECT ${transferColumns} FROM transfers t WHERE t.uetr = $1 AND t.reason_code = 'DUPL'
             ORDER BY t.received_at LIMIT 100)`,
    values: [uetr],
  });
  return result.rows.map(transferFromRaw);
}

export async function selectTransferByInstruction(db: pg.Pool, debtorAgent: string, instructionId: string): Promise<TransferRow | undefined> {
  const result = await db.query({
    name: 'transfers_by_instruction',
    text: `SELECT ${transferColumns} FROM transfers t WHERE t.debtor_agent = $1 AND t.instruction_id = $2`,
    values: [debtorAgent, instructionId],
  });
  return result.rows[0] === undefined ? undefined : transferFromRaw(result.rows[0]);
}

export interface TransferPageKey {
  receivedAt: Date;
  debtorAgent: string;
  instructionId: string;
}

/**
 * A page of transfers newest first. The row comparison starts the page in
 * transfers_received_at_idx at the key's receipt time; the rows of one receipt
 * time are sorted among themselves (migration 0005; transfers-page.test.ts).
 */
export const transfersPageSql = `SELECT ${transferColumns} FROM transfers t
            WHERE ($1 = '' OR t.debtor_agent = $1 OR t.creditor_agent = $1 OR t.intermediary_agent = $1)
              AND ($2 = '' OR t.status = $2)
              AND ($3::timestamptz IS NULL OR (t.received_at, t.debtor_agent, t.instruction_id) < ($3, $4, $5))
            ORDER BY t.received_at DESC, t.debtor_agent DESC, t.instruction_id DESC
            LIMIT $6`;

/** One page of transfers, newest first, after the given key, optionally filtered. */
export async function selectTransfersPage(
  db: pg.Pool,
  filter: { bic: string; status: TransferStatusName | '' },
  after: TransferPageKey | undefined,
  limit: number,
): Promise<TransferRow[]> {
  const result = await db.query({
    name: 'transfers_page',
    text: transfersPageSql,
    values: [filter.bic, filter.status, after?.receivedAt ?? null, after?.debtorAgent ?? '', after?.instructionId ?? '', limit],
  });
  return result.rows.map(transferFromRaw);
}

export interface ReconciliationTotals {
  currency: string;
  balanceTotalMinor: bigint;
  fundedTotalMinor: bigint;
  defundedTotalMinor: bigint;
  reservedTotalMinor: bigint;
  reservedTransfersTotalMinor: bigint;
  journalDebitTotalMinor: bigint;
  journalCreditTotalMinor: bigint;
  /** What the journal books for transfers, and for liquidity transfers. */
  journalTransfersTotalMinor: bigint;
  journalLiquidityTotalMinor: bigint;
  /** Sum of the amounts of SETTLED transfers. */
  settledTransfersTotalMinor: bigint;
  negativePositions: { bic: string; availableMinor: bigint }[];
  /** Per participant: balance minus what its journal entries say it should be. */
  journalMismatches: { bic: string; balanceMinor: bigint; journalMinor: bigint }[];
  checkTime: Date;
}

/**
 * Totals per currency for Reconcile, read in one REPEATABLE READ snapshot so
 * every figure describes the same instant.
 */
export async function selectReconciliation(db: pg.Pool): Promise<ReconciliationTotals[]> {
  return inTransaction(db, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async (client) => {
    const result = await client.query(`
      WITH currencies AS (
        SELECT currency FROM positions UNION SELECT currency FROM journal_entries
      ), positions_by AS (
        SELECT currency, sum(balance_minor) AS balance, sum(reserved_minor) AS reserved
          FROM positions GROUP BY currency
      ), operations_by AS (
        SELECT currency,
               sum(amount_minor) FILTER (WHERE kind = 'FUND') AS funded,
               sum(amount_minor) FILTER (WHERE kind = 'DEFUND') AS defunded
          FROM position_operations GROUP BY currency
      ), reserved_by AS (
        SELECT currency, sum(amount_minor) AS reserved FROM transfers WHERE status = 'RESERVED' GROUP BY currency
      ), journal_by AS (
        -- Each booking debits one account and credits another by the same
        -- amount, so debits equal credits by construction; both are reported.
        SELECT currency, sum(amount_minor) AS debits, sum(amount_minor) AS credits,
               coalesce(sum(amount_minor) FILTER (WHERE transfer_instruction_id IS NOT NULL), 0) AS transfers_booked,
               coalesce(sum(amount_minor) FILTER (WHERE position_request_id IS NOT NULL), 0) AS liquidity_booked
          FROM journal_entries GROUP BY currency
      ), settled_by AS (
        SELECT currency, sum(amount_minor) AS settled FROM transfers WHERE status = 'SETTLED' GROUP BY currency
      ), negative AS (
        SELECT currency, json_agg(json_build_object('bic', bic,
                 'available', (balance_minor + debit_cap_minor - reserved_minor)::text)) AS list
          FROM positions WHERE balance_minor + debit_cap_minor - reserved_minor < 0 GROUP BY currency
      ), journal_per_account AS (
        SELECT currency, account, sum(signed) AS net FROM (
          SELECT currency, credit_account AS account, amount_minor AS signed FROM journal_entries
          UNION ALL
          SELECT currency, debit_account, -amount_minor FROM journal_entries
        ) sides WHERE account <> 'RTGS' GROUP BY currency, account
      ), mismatches AS (
        SELECT p.currency, json_agg(json_build_object('bic', p.bic, 'balance', p.balance_minor::text,
                 'journal', coalesce(j.net, 0)::text)) AS list
          FROM positions p LEFT JOIN journal_per_account j ON j.currency = p.currency AND j.account = p.bic
         WHERE p.balance_minor <> coalesce(j.net, 0)
         GROUP BY p.currency
      )
      SELECT c.currency,
             coalesce(p.balance, 0)::text AS balance, coalesce(o.funded, 0)::text AS funded,
             coalesce(o.defunded, 0)::text AS defunded, coalesce(p.reserved, 0)::text AS reserved,
             coalesce(r.reserved, 0)::text AS reserved_transfers,
             coalesce(j.debits, 0)::text AS debits, coalesce(j.credits, 0)::text AS credits,
             coalesce(j.transfers_booked, 0)::text AS transfers_booked, coalesce(j.liquidity_booked, 0)::text AS liquidity_booked,
             coalesce(st.settled, 0)::text AS settled,
             coalesce(n.list, '[]') AS negative, coalesce(m.list, '[]') AS mismatches,
             statement_timestamp() AS check_time
        FROM currencies c
        LEFT JOIN positions_by p USING (currency) LEFT JOIN operations_by o USING (currency)
        LEFT JOIN reserved_by r USING (currency) LEFT JOIN journal_by j USING (currency)
        LEFT JOIN negative n USING (currency) LEFT JOIN mismatches m USING (currency)
        LEFT JOIN settled_by st USING (currency)
       ORDER BY c.currency`);
    return result.rows.map((r) => ({
      currency: r.currency,
      balanceTotalMinor: BigInt(r.balance),
      fundedTotalMinor: BigInt(r.funded),
      defundedTotalMinor: BigInt(r.defunded),
      reservedTotalMinor: BigInt(r.reserved),
      reservedTransfersTotalMinor: BigInt(r.reserved_transfers),
      journalDebitTotalMinor: BigInt(r.debits),
      journalCreditTotalMinor: BigInt(r.credits),
      journalTransfersTotalMinor: BigInt(r.transfers_booked),
      journalLiquidityTotalMinor: BigInt(r.liquidity_booked),
      settledTransfersTotalMinor: BigInt(r.settled),
      negativePositions: (r.negative as { bic: string; available: string }[]).map((n) => ({
        bic: n.bic,
        availableMinor: BigInt(n.available),
      })),
      journalMismatches: (r.mismatches as { bic: string; balance: string; journal: string }[]).map((m) => ({
        bic: m.bic,
        balanceMinor: BigInt(m.balance),
        journalMinor: BigInt(m.journal),
      })),
      checkTime: r.check_time as Date,
    }));
  });
}

/** The transfers (not DUPL rejections) with these UETRs, any status: what creditor answers refer to. */
export async function selectTransfersByUetrs(db: pg.Pool, uetrs: readonly string[]): Promise<TransferRow[]> {
  const result = await db.query({
    name: 'transfers_by_uetrs',
    text: `SELECT ${transferColumns} FROM transfers t WHERE t.uetr = ANY($1::uuid[]) AND t.reason_code <> 'DUPL'`,
    values: [uetrs],
  });
  return result.rows.map(transferFromRaw);
}

/** RESERVED transfers whose reservation timeout has passed, oldest deadline first. */
export async function selectDueReservations(db: pg.Pool, limit: number): Promise<TransferRow[]> {
  const result = await db.query({
    name: 'transfers_due_reservations',
    text: `SELECT ${transferColumns} FROM transfers t
            WHERE t.status = 'RESERVED' AND t.expire_at <= now()
            ORDER BY t.expire_at LIMIT $1`,
    values: [limit],
  });
  return result.rows.map(transferFromRaw);
}

/** Transfers waiting for this creditor agent's answer, after a point of its inbound sequence. */
export async function selectInboundAfter(db: pg.Pool, creditorAgent: string, afterSequence: bigint, limit: number): Promise<TransferRow[]> {
  const result = await db.query({
    name: 'transfers_inbound_after',
    text: `SELECT ${transferColumns} FROM transfers t
            WHERE t.creditor_agent = $1 AND t.status = 'RESERVED' AND t.creditor_sequence > $2
            ORDER BY t.creditor_sequence LIMIT $3`,
    values: [creditorAgent, afterSequence.toString(), limit],
  });
  return result.rows.map(transferFromRaw);
}

export interface ConfirmationView {
  sequence: bigint;
  uetr: string;
  instructionId: string;
  endToEndId: string;
  role: 'DEBTOR' | 'CREDITOR' | 'INTERMEDIARY';
  status: 'SETTLED' | 'REJECTED' | 'EXPIRED';
  reasonCode: string;
  reason: string;
  currency: string;
  amountMinor: bigint;
  debtorAgent: string;
  creditorAgent: string;
  finalAt: Date;
  traceId: string;
}

/** A participant's confirmations after a sequence number, in sequence order. */
export async function selectConfirmationsAfter(db: pg.Pool, bic: string, afterSequence: bigint, limit: number): Promise<ConfirmationView[]> {
  const result = await db.query({
    name: 'confirmations_after',
    text: `SELECT c.sequence::text AS sequence, t.uetr::text AS uetr, c.instruction_id, t.end_to_end_id, c.role,
                  c.status, c.reason_code, c.reason, t.currency, t.amount_minor::text AS amount_minor,
                  c.debtor_agent, t.creditor_agent, c.final_at, t.trace_id
             FROM confirmations c
             JOIN transfers t ON t.debtor_agent = c.debtor_agent AND t.instruction_id = c.instruction_id
            WHERE c.bic = $1 AND c.sequence > $2
            ORDER BY c.sequence LIMIT $3`,
    values: [bic, afterSequence.toString(), limit],
  });
  return result.rows.map((r) => ({
    sequence: BigInt(r.sequence),
    uetr: r.uetr,
    instructionId: r.instruction_id,
    endToEndId: r.end_to_end_id,
    role: r.role,
    status: r.status,
    reasonCode: r.reason_code,
    reason: r.reason,
    currency: r.currency,
    amountMinor: BigInt(r.amount_minor),
    debtorAgent: r.debtor_agent,
    creditorAgent: r.creditor_agent,
    finalAt: r.final_at,
    traceId: r.trace_id,
  }));
}

/** The latest confirmation sequence handed out and the last one purged by retention. */
export async function selectConfirmationRange(db: pg.Pool, bic: string): Promise<{ latest: bigint; purgedThrough: bigint } | undefined> {
  const result = await db.query({
    name: 'confirmations_range',
    text: `SELECT confirmation_sequence::text AS latest, confirmations_purged_through::text AS purged FROM participants WHERE bic = $1`,
    values: [bic],
  });
  const row = result.rows[0];
  return row === undefined ? undefined : { latest: BigInt(row.latest), purgedThrough: BigInt(row.purged) };
}

/**
 * The most confirmations one delivered range may span (a CHECK in migration
 * 0002: last - first < this): a lookup by sequence reads only the ranges
 * starting fewer than this many sequences before it.
 */
export const deliveredRangeSequencesMax = 1_000;

/**
 * Records that each range of confirmations was written to a stream at its
 * time: one narrow row per stream page, appended (migration 0002 says why not
 * a column on each confirmation).
 */
export async function insertConfirmationDeliveries(
  db: pg.Pool,
  ranges: readonly { bic: string; firstSequence: bigint; lastSequence: bigint; deliveredAt: Date }[],
): Promise<void> {
  await db.query({
    name: 'confirmation_deliveries_insert',
    text: `INSERT INTO confirmation_deliveries (bic, first_sequence, last_sequence, delivered_at)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[])`,
    values: [
      ranges.map((r) => r.bic),
      ranges.map((r) => r.firstSequence.toString()),
      ranges.map((r) => r.lastSequence.toString()),
      ranges.map((r) => r.deliveredAt.toISOString()),
    ],
  });
}

export interface ConfirmationEvent {
  bic: string;
  role: string;
  finalAt: Date;
  deliveredAt: Date | null;
  batchId: bigint;
}

/**
 * The confirmations of one transfer, for its lifecycle: by primary key, from
 * the sequence numbers the transfer keeps (migration 0004). A confirmation
 * was first delivered at the earliest of the delivered ranges holding it; a
 * range spans at most deliveredRangeSequencesMax sequences, so only those
 * starting that close before it are read. Nodes before migration 0002 set
 * delivered_at instead (least() ignores whichever is null).
 */
export const confirmationEventsSql = `
  SELECT c.bic, c.role, c.final_at, c.batch_id::text AS batch_id,
         least(c.delivered_at,
               (SELECT min(d.delivered_at) FROM confirmation_deliveries d
                 WHERE d.bic = c.bic AND d.first_sequence BETWEEN c.sequence - ${deliveredRangeSequencesMax - 1} AND c.sequence
                   AND d.last_sequence >= c.sequence)) AS delivered_at
    FROM transfers t
   CROSS JOIN LATERAL (VALUES (t.debtor_agent, t.debtor_confirmation),
                             (t.creditor_agent, t.creditor_confirmation),
                             (t.intermediary_agent, t.intermediary_confirmation)) AS k(bic, sequence)
    JOIN confirmations c ON c.bic = k.bic AND c.sequence = k.sequence
                         -- The row fetched names its transfer: a wrong number shows nothing, not another's.
                         AND c.debtor_agent = t.debtor_agent AND c.instruction_id = t.instruction_id
   WHERE t.debtor_agent = $1::text AND t.instruction_id = $2::text
   ORDER BY c.sequence`;

export async function selectConfirmationEvents(db: pg.Pool, debtorAgent: string, instructionId: string): Promise<ConfirmationEvent[]> {
  // Unnamed, so planned for each call with the table as it is: measured, a
  // generic plan prepared while confirmation_deliveries was empty scanned it
  // whole. An operator's lookup, rare enough that planning it costs nothing.
  const result = await db.query({ text: confirmationEventsSql, values: [debtorAgent, instructionId] });
  return result.rows.map((r) => ({ bic: r.bic, role: r.role, finalAt: r.final_at, deliveredAt: r.delivered_at, batchId: BigInt(r.batch_id) }));
}

/** How many transfers are RESERVED right now (partial index: cheap). */
export async function countReservedTransfers(db: pg.Pool): Promise<number> {
  const result = await db.query({ name: 'transfers_reserved_count', text: `SELECT count(*)::int AS n FROM transfers WHERE status = 'RESERVED'` });
  return result.rows[0].n as number;
}
