// SQL for participants: one exported function per statement.
import type pg from 'pg';
import type { AcceptanceModeName, ParticipantKindName, ParticipantRow, ParticipantStatusName } from './rows.js';

const participantColumns = `bic, name, kind, status, acceptance_mode, settlement_currencies, created_at, updated_at`;

function participantFromRow(r: Record<string, unknown>): ParticipantRow {
  return {
    bic: r.bic as string,
    name: r.name as string,
    kind: r.kind as ParticipantKindName,
    status: r.status as ParticipantStatusName,
    acceptanceMode: r.acceptance_mode as AcceptanceModeName,
    settlementCurrencies: r.settlement_currencies as string[],
    createdAt: r.created_at as Date,
    updatedAt: r.updated_at as Date,
  };
}

export interface NewParticipant {
  bic: string;
  name: string;
  kind: ParticipantKindName;
  status: ParticipantStatusName;
  acceptanceMode: AcceptanceModeName;
  settlementCurrencies: string[];
}

/** Inserts a participant and a zero position per settlement currency; undefined if the BIC exists. */
export async function insertParticipant(db: pg.Pool, p: NewParticipant): Promise<ParticipantRow | undefined> {
  const result = await db.query({
    name: 'participants_insert',
    text: `WITH inserted AS (
             INSERT INTO participants (bic, name, kind, status, acceptance_mode, settlement_currencies)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (bic) DO NOTHING
             RETURNING ${participantColumns}
           ), opened AS (
             INSERT INTO positions (bic, currency)
             SELECT i.bic, c FROM inserted i, unnest(i.settlement_currencies) AS c
           )
           SELECT * FROM inserted`,
    values: [p.bic, p.name, p.kind, p.status, p.acceptanceMode, p.settlementCurrencies],
  });
  return result.rows[0] === undefined ? undefined : participantFromRow(result.rows[0]);
}

export async function selectParticipant(db: pg.Pool, bic: string): Promise<ParticipantRow | undefined> {
  const result = await db.query({
    name: 'participants_select',
    text: `SELECT ${participantColumns} FROM participants WHERE bic = $1`,
    values: [bic],
  });
  return result.rows[0] === undefined ? undefined : participantFromRow(result.rows[0]);
}

/** One page of participants ordered by BIC, after `afterBic` (keyset pagination). */
export async function selectParticipantsPage(db: pg.Pool, afterBic: string, limit: number): Promise<ParticipantRow[]> {
  const result = await db.query({
    name: 'participants_page',
    text: `SELECT ${participantColumns} FROM participants WHERE bic > $1 ORDER BY bic LIMIT $2`,
    values: [afterBic, limit],
  });
  return result.rows.map(participantFromRow);
}

export interface ParticipantChanges {
  name?: string;
  status?: ParticipantStatusName;
  acceptanceMode?: AcceptanceModeName;
  /** The complete new list; currencies are only ever added. */
  settlementCurrencies?: string[];
}

/**
 * Applies changes and opens positions for added currencies, in one statement.
 * Returns undefined if the participant does not exist.
 */
export async function updateParticipant(db: pg.Pool, bic: string, c: ParticipantChanges): Promise<ParticipantRow | undefined> {
  const result = await db.query({
    name: 'participants_update',
    text: `WITH changed AS (
             UPDATE participants SET
               name = coalesce($2, name),
               status = coalesce($3, status),
               acceptance_mode = coalesce($4, acceptance_mode),
               settlement_currencies = coalesce($5, settlement_currencies),
               updated_at = now()
             WHERE bic = $1
             RETURNING ${participantColumns}
           ), opened AS (
             INSERT INTO positions (bic, currency)
             SELECT ch.bic, c FROM changed ch, unnest(ch.settlement_currencies) AS c
             ON CONFLICT (bic, currency) DO NOTHING
           )
           SELECT * FROM changed`,
    values: [bic, c.name ?? null, c.status ?? null, c.acceptanceMode ?? null, c.settlementCurrencies ?? null],
  });
  return result.rows[0] === undefined ? undefined : participantFromRow(result.rows[0]);
}

export async function countParticipants(db: pg.Pool): Promise<number> {
  const result = await db.query('SELECT count(*)::int AS n FROM participants');
  return result.rows[0].n as number;
}
