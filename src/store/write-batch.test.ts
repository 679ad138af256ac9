// The settlement write stores exactly what the batch decided. The journal
// entries and confirmations of new transfers are not sent row by row but
// derived in SQL from the transfers' columns and per-role sequence numbers
// (writeBatch): what lands must still be, row for row, what decideBatch wrote.
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.js';
import { decideBatch, type Operation } from '../clearing/batch.js';
import type { BatchSnapshot, ParticipantLockRow, PositionRow } from './rows.js';
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

const participant = (bic: string, kind: 'BANK' | 'GATEWAY', acceptanceMode: 'AUTOMATIC' | 'EXPLICIT', sequence: bigint): ParticipantLockRow => ({
  bic,
  kind,
  status: 'ACTIVE',
  acceptanceMode,
  confirmationSequence: sequence,
  inboundSequence: 0n,
});
const position = (bic: string, balanceMinor: bigint): PositionRow => ({
  bic,
  currency: 'EUR',
  balanceMinor,
  reservedMinor: 0n,
  debitCapMinor: 0n,
  updatedAt: new Date(),
});

let ids = 0;
function transfer(creditorAgent: string, amountMinor: bigint, intermediaryAgent = ''): Operation {
  const id = `write-${++ids}`;
  return {
    kind: 'transfer',
    transfer: {
      instructionId: id,
      endToEndId: id,
      uetr: randomUUID(),
      debtorAgent: debtor,
      creditorAgent,
      intermediaryAgent,
      currency: 'EUR',
      amountMinor,
      debtorName: 'Debtor',
      debtorIban: 'DE89370400440532013000',
      creditorName: 'Creditor',
      creditorIban: 'DE89370400440532013001',
      remittanceInformation: '',
    },
    digest: createHash('sha256').update(id).digest(),
    receivedAt: new Date(),
    traceId: '',
  };
}

describe('writeBatch', () => {
  test('journal entries and confirmations, derived or sent, are row for row what the batch decided', async () => {
    const snapshot: BatchSnapshot = {
      batchId: 77n,
      participants: [
        participant(debtor, 'BANK', 'AUTOMATIC', 10n),
        participant(creditor, 'BANK', 'AUTOMATIC', 20n),
        participant(explicitCreditor, 'BANK', 'EXPLICIT', 30n),
        participant(gateway, 'GATEWAY', 'AUTOMATIC', 40n),
      ],
      positions: [position(debtor, 1_000n), position(creditor, 0n), position(explicitCreditor, 0n), position(gateway, 0n)],
      transfers: [],
      uetrsInUse: [],
      positionOperations: [],
    };
    const fundId = `write-fund-${++ids}`;
    const operations: Operation[] = [
      transfer(creditor, 100n), // settled: debtor and creditor confirmations, one entry
      transfer(creditor, 200n, gateway), // settled through the gateway: three confirmations
      transfer('WRTUDEFFXXX', 5n), // unknown creditor: rejected RC01, the debtor's confirmation only
      transfer(creditor, 5_000n), // too much: rejected AM04, two confirmations, no entry
      transfer(explicitCreditor, 50n), // reserved: no confirmation, no entry yet
      { kind: 'FUND', requestId: fundId, bic: creditor, currency: 'EUR', amountMinor: 7n, digest: createHash('sha256').update(fundId).digest() },
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
    const { text, values, name } = writeBatch(snapshot.batchId, { nodeId: 'write-test', notificationSource: 'write-test' }, writes, new Date());
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
      [snapshot.batchId.toString()],
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
    const journal = await db.pool.query(
      `SELECT currency, debit_account, credit_account, amount_minor::text AS amount_minor, transfer_debtor_agent,
              transfer_instruction_id, position_request_id
         FROM journal_entries WHERE batch_id = $1`,
      [snapshot.batchId.toString()],
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
  });
});
