// The settlement write stores exactly what the batch decided. The journal
// entries and confirmations of new transfers are not sent row by row but
// derived in SQL from the transfers' columns and per-role sequence numbers
// (writeBatch): what lands must still be, row for row, what decideBatch wrote,
// and each transfer keeps the sequence numbers of its own confirmations.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { decideBatch, type Operation } from '../clearing/batch.js';
import type { BatchSnapshot, BatchWrites, TransferRow } from './rows.js';
import { randomUUID } from 'node:crypto';
import { participantRow, positionOperation, positionRow, transferOperation } from '../../test/support/operations.js';
import { beginSettlementSql, writeBatch } from './settlement.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const debtor = 'WRTDDEFFXXX';
const creditor = 'WRTCDEFFXXX';
const explicitCreditor = 'WRTEDEFFXXX';
const gateway = 'WRTGDEFFXXX';

const transfer = (creditorAgent: string, amountMinor: bigint, intermediaryAgent = ''): Operation =>
  transferOperation('write', { debtorAgent: debtor, creditorAgent, intermediaryAgent }, amountMinor);

describe('writeBatch', () => {
  test('journal entries and confirmations, derived or sent, are row for row what the batch decided', async () => {
    const snapshot: BatchSnapshot = {
      batchId: 77n,
      participants: [
        participantRow(debtor, 10n),
        participantRow(creditor, 20n),
        participantRow(explicitCreditor, 30n, 'BANK', 'EXPLICIT'),
        participantRow(gateway, 40n, 'GATEWAY'),
      ],
      positions: [positionRow(debtor, 1_000n), positionRow(creditor, 0n), positionRow(explicitCreditor, 0n), positionRow(gateway, 0n)],
      transfers: [],
      uetrsInUse: [],
      positionOperations: [],
    };
    const operations: Operation[] = [
      transfer(creditor, 100n), // settled: debtor and creditor confirmations, one entry
      transfer(creditor, 200n, gateway), // settled through the gateway: three confirmations
      transfer('WRTUDEFFXXX', 5n), // unknown creditor: rejected RC01, the debtor's confirmation only
      transfer(creditor, 5_000n), // too much: rejected AM04, two confirmations, no entry
      transfer(explicitCreditor, 50n), // reserved: no confirmation, no entry yet
      positionOperation('write', 'FUND', creditor, 7n),
      transfer(creditor, 300n), // settled after the liquidity transfer, in arrival order
    ];
    const { writes } = decideBatch(operations, snapshot, { transferAmountMaxMinor: 1_000_000n, reservationTimeoutMs: 10_000, now: new Date() });
    expect(writes.confirmations).toHaveLength(2 + 3 + 1 + 2 + 0 + 2);
    expect(writes.journal).toHaveLength(1 + 1 + 1 + 1); // three transfers and the liquidity transfer

    for (const p of snapshot.participants) {
      await db.pool.query(
        `INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies) VALUES ($1, 'Write test', $2, 'ACTIVE', $3, '{EUR}')`,
        [p.bic, p.kind, p.acceptanceMode],
      );
      await db.pool.query(`INSERT INTO positions (bic, currency) VALUES ($1, 'EUR')`, [p.bic]);
    }
    await storeAndCompare(snapshot.batchId, writes);

    // A second batch finalizes the reserved transfer (the creditor accepts) and
    // rejects another that expired: their entries and confirmations come from
    // the UPDATE's RETURNING.
    const reservedRow = writes.transfers.find((t) => t.status === 'RESERVED');
    expect(reservedRow).toBeDefined();
    const reserved = reservedRow as TransferRow;
    const expiring = { ...reserved, instructionId: 'write-expiring', uetr: randomUUID(), expireAt: new Date(Date.now() - 1_000) };
    await db.pool.query(
      `INSERT INTO transfers (debtor_agent, instruction_id, end_to_end_id, uetr, creditor_agent, currency, amount_minor,
         debtor_name, debtor_iban, creditor_name, creditor_iban, request_digest, status, received_at, reserved_at, expire_at, batch_id)
       VALUES ($1, $2, $2, $3, $4, 'EUR', $5, 'n', 'i', 'n', 'i', '\\x00', 'RESERVED', now(), now(), $6, 77)`,
      [expiring.debtorAgent, expiring.instructionId, expiring.uetr, expiring.creditorAgent, expiring.amountMinor.toString(), expiring.expireAt],
    );
    const second: BatchSnapshot = {
      batchId: 78n,
      participants: snapshot.participants.map((p) => ({ ...p, confirmationSequence: p.confirmationSequence + 100n })),
      positions: [positionRow(debtor, 1_000n), positionRow(explicitCreditor, 0n)].map((p) =>
        p.bic === debtor ? { ...p, reservedMinor: reserved.amountMinor + expiring.amountMinor } : p,
      ),
      transfers: [reserved, expiring],
      uetrsInUse: [],
      positionOperations: [],
    };
    const finalizing = decideBatch(
      [
        { kind: 'answer', transfer: reserved, decision: 'ACCEPT', reasonCode: '' },
        { kind: 'expire', transfer: expiring },
      ],
      second,
      { transferAmountMaxMinor: 1_000_000n, reservationTimeoutMs: 10_000, now: new Date() },
    ).writes;
    expect(finalizing.finalizedTransfers.map((t) => t.status)).toEqual(['SETTLED', 'EXPIRED']);
    expect(finalizing.confirmations).toHaveLength(4);
    expect(finalizing.journal).toHaveLength(1);
    await storeAndCompare(second.batchId, finalizing);
    const stored = await db.pool.query(`SELECT instruction_id, status, batch_id::text AS batch_id FROM transfers WHERE batch_id = 78 ORDER BY instruction_id`);
    expect(stored.rows.map((r) => `${r.instruction_id} ${r.status}`)).toEqual([`${reserved.instructionId} SETTLED`, 'write-expiring EXPIRED']);
  });
});

/** Writes `writes` as the settlement transaction does, then compares the stored entries and confirmations with them. */
async function storeAndCompare(batchId: bigint, writes: BatchWrites): Promise<void> {
  const { text, values, name } = writeBatch(batchId, { nodeId: 'write-test', notificationSource: 'write-test' }, writes, new Date());
  const client = await db.pool.connect();
  try {
    await client.query(beginSettlementSql);
    await client.query({ text, values, name });
    await client.query('COMMIT');
  } finally {
    client.release();
  }

  const confirmations = await db.pool.query(
    `SELECT bic, sequence::text AS sequence, debtor_agent, instruction_id, role, status, reason_code, reason, final_at
       FROM confirmations WHERE batch_id = $1 ORDER BY bic, sequence`,
    [batchId.toString()],
  );
  expect(confirmations.rows).toEqual(
    [...writes.confirmations]
      .sort((a, b) => (a.bic === b.bic ? Number(a.sequence - b.sequence) : a.bic < b.bic ? -1 : 1))
      .map((c) => ({
        bic: c.bic,
        sequence: c.sequence.toString(),
        debtor_agent: c.debtorAgent,
        instruction_id: c.instructionId,
        role: c.role,
        status: c.status,
        reason_code: c.reasonCode,
        reason: c.reason,
        final_at: c.finalAt,
      })),
  );
  // Each transfer keeps its confirmations' sequence numbers (InspectTransfer
  // reads them by these): exactly the confirmations written, none else.
  const kept = await db.pool.query(
    `SELECT k.bic, k.sequence::text AS sequence, t.debtor_agent, t.instruction_id, k.role
       FROM transfers t
      CROSS JOIN LATERAL (VALUES (t.debtor_agent, t.debtor_confirmation, 'DEBTOR'),
                                (t.creditor_agent, t.creditor_confirmation, 'CREDITOR'),
                                (t.intermediary_agent, t.intermediary_confirmation, 'INTERMEDIARY')) AS k(bic, sequence, role)
      WHERE t.batch_id = $1 AND k.sequence IS NOT NULL
      ORDER BY k.bic, k.sequence`,
    [batchId.toString()],
  );
  expect(kept.rows).toEqual(
    confirmations.rows.map((c) => ({ bic: c.bic, sequence: c.sequence, debtor_agent: c.debtor_agent, instruction_id: c.instruction_id, role: c.role })),
  );
  const journal = await db.pool.query(
    `SELECT currency, debit_account, credit_account, amount_minor::text AS amount_minor, transfer_debtor_agent,
            transfer_instruction_id, position_request_id
       FROM journal_entries WHERE batch_id = $1`,
    [batchId.toString()],
  );
  const entry = (j: Record<string, unknown>) => JSON.stringify(j);
  expect(journal.rows.map(entry).sort()).toEqual(
    writes.journal
      .map((j) =>
        entry({
          currency: j.currency,
          debit_account: j.debitAccount,
          credit_account: j.creditAccount,
          amount_minor: j.amountMinor.toString(),
          transfer_debtor_agent: j.transferDebtorAgent,
          transfer_instruction_id: j.transferInstructionId,
          position_request_id: j.positionRequestId,
        }),
      )
      .sort(),
  );
}
