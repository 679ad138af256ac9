-- 0001: the clearing node's schema: participants, positions, transfers, the
-- double-entry journal, position operations (liquidity transfers and debit
-- caps) and per-participant confirmations.
--
-- Money is bigint minor units everywhere. Invariants that must hold whatever
-- the application does are CHECK constraints and triggers here.

CREATE TABLE participants (
  bic text PRIMARY KEY CHECK (bic ~ '^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$'),
  name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 140),
  kind text NOT NULL CHECK (kind IN ('BANK', 'GATEWAY')),
  status text NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED')),
  acceptance_mode text NOT NULL CHECK (acceptance_mode IN ('AUTOMATIC', 'EXPLICIT')),
  settlement_currencies text[] NOT NULL DEFAULT '{}',
  -- Last confirmation sequence number handed to this participant; the next
  -- confirmation gets confirmation_sequence + 1, assigned under the row lock,
  -- so the sequence is gapless.
  confirmation_sequence bigint NOT NULL DEFAULT 0 CHECK (confirmation_sequence >= 0),
  -- Last sequence number of a transfer reserved for this participant as an
  -- EXPLICIT creditor agent: the cursor of its inbound stream, gapless like
  -- confirmation_sequence.
  inbound_sequence bigint NOT NULL DEFAULT 0 CHECK (inbound_sequence >= 0),
  -- Confirmations up to this sequence have been purged by retention.
  confirmations_purged_through bigint NOT NULL DEFAULT 0 CHECK (confirmations_purged_through >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE positions (
  bic text NOT NULL REFERENCES participants (bic),
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  balance_minor bigint NOT NULL DEFAULT 0,
  reserved_minor bigint NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
  debit_cap_minor bigint NOT NULL DEFAULT 0 CHECK (debit_cap_minor >= 0),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (bic, currency),
  -- available = balance + debit cap - reserved never goes below zero.
  CONSTRAINT positions_available_not_negative
    CHECK (balance_minor + debit_cap_minor - reserved_minor >= 0)
);

CREATE SEQUENCE settlement_batch_id_seq;

-- One row per committed settlement batch (one Postgres transaction).
CREATE TABLE settlement_batches (
  id bigint PRIMARY KEY,
  node_id text NOT NULL,
  operations integer NOT NULL CHECK (operations > 0),
  committed_at timestamptz NOT NULL DEFAULT now()
);

-- debtor_agent is not a foreign key: the settlement batch only stores
-- transfers of participants it has just locked, and a per-row key check (a
-- FOR KEY SHARE lock on the participant) costs every transfer.
CREATE TABLE transfers (
  debtor_agent text NOT NULL,
  instruction_id text NOT NULL CHECK (char_length(instruction_id) BETWEEN 1 AND 35),
  end_to_end_id text NOT NULL CHECK (char_length(end_to_end_id) BETWEEN 1 AND 35),
  uetr uuid NOT NULL,
  -- Not a foreign key: a transfer to an unknown creditor agent is stored REJECTED RC01.
  creditor_agent text NOT NULL,
  intermediary_agent text NOT NULL DEFAULT '',
  currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  amount_minor bigint NOT NULL CHECK (amount_minor > 0),
  -- Personal data: stored to forward the transfer, never logged or traced.
  debtor_name text NOT NULL,
  debtor_iban text NOT NULL,
  creditor_name text NOT NULL,
  creditor_iban text NOT NULL,
  remittance_information text NOT NULL DEFAULT '',
  -- SHA-256 of the instruction's content: a repeated instruction id with the
  -- same digest is a replay, with another digest a reuse.
  request_digest bytea NOT NULL,
  status text NOT NULL CHECK (status IN ('RESERVED', 'SETTLED', 'REJECTED', 'EXPIRED')),
  reason_code text NOT NULL DEFAULT '',
  reason text NOT NULL DEFAULT '',
  received_at timestamptz NOT NULL,
  reserved_at timestamptz,
  final_at timestamptz,
  expire_at timestamptz,
  trace_id text NOT NULL DEFAULT '',
  -- The creditor agent's inbound sequence number, set when reserved for an EXPLICIT creditor.
  creditor_sequence bigint,
  -- The settlement batch that gave the transfer its current status.
  batch_id bigint NOT NULL,
  PRIMARY KEY (debtor_agent, instruction_id),
  CHECK ((status = 'RESERVED') = (final_at IS NULL)),
  CHECK ((status IN ('RESERVED', 'SETTLED')) = (reason_code = ''))
);

-- A UETR identifies one payment: only the DUPL rejections of later
-- instructions that reused it may share it (found through their own, rarely
-- written, index).
CREATE UNIQUE INDEX transfers_uetr_key ON transfers (uetr) WHERE reason_code <> 'DUPL';
CREATE INDEX transfers_uetr_dupl_idx ON transfers (uetr) WHERE reason_code = 'DUPL';
CREATE INDEX transfers_received_idx ON transfers (received_at, debtor_agent, instruction_id);
CREATE INDEX transfers_reserved_expire_idx ON transfers (expire_at) WHERE status = 'RESERVED';
CREATE INDEX transfers_inbound_idx ON transfers (creditor_agent, creditor_sequence) WHERE status = 'RESERVED';

-- A final transfer is immutable; only a RESERVED one may change (to its final status).
CREATE FUNCTION transfers_final_is_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'transfers are never deleted (uetr %)', OLD.uetr;
  END IF;
  IF OLD.status <> 'RESERVED' THEN
    RAISE EXCEPTION 'transfer % is final (%) and cannot change', OLD.uetr, OLD.status;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER transfers_final_is_immutable BEFORE UPDATE OR DELETE ON transfers
  FOR EACH ROW EXECUTE FUNCTION transfers_final_is_immutable();

-- Liquidity transfers from and to the RTGS system, and debit cap changes.
CREATE TABLE position_operations (
  request_id text PRIMARY KEY CHECK (char_length(request_id) BETWEEN 1 AND 35),
  kind text NOT NULL CHECK (kind IN ('FUND', 'DEFUND', 'SET_DEBIT_CAP')),
  bic text NOT NULL,
  currency text NOT NULL,
  amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
  request_digest bytea NOT NULL,
  balance_after_minor bigint NOT NULL,
  reserved_after_minor bigint NOT NULL,
  debit_cap_after_minor bigint NOT NULL,
  batch_id bigint NOT NULL,
  created_at timestamptz NOT NULL,
  FOREIGN KEY (bic, currency) REFERENCES positions (bic, currency)
);

-- The double-entry journal: one row per booking, debiting one account and
-- crediting another by the same amount, so debits equal credits by
-- construction. Accounts are participant BICs, plus 'RTGS' for the central
-- bank's side of liquidity transfers. Append-only.
--
-- No foreign keys to transfers or position_operations: a booking is written by
-- the same statement as what it books, and per-row foreign-key checks were a
-- large part of a batch's cost. Reconcile checks instead that the journal
-- books exactly the settled transfers and the liquidity transfers.
CREATE TABLE journal_entries (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  batch_id bigint NOT NULL,
  currency text NOT NULL,
  debit_account text NOT NULL,
  credit_account text NOT NULL,
  amount_minor bigint NOT NULL CHECK (amount_minor > 0),
  -- What the entry books: a transfer (debtor agent + instruction id) or a position operation.
  transfer_debtor_agent text,
  transfer_instruction_id text,
  position_request_id text,
  created_at timestamptz NOT NULL,
  CHECK (debit_account <> credit_account),
  CHECK ((transfer_instruction_id IS NULL) <> (position_request_id IS NULL))
);

CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
  FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
  FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
CREATE TRIGGER position_operations_append_only BEFORE UPDATE OR DELETE ON position_operations
  FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Final-outcome status reports, one per participant concerned, numbered by a
-- gapless per-participant sequence.
-- No foreign keys (written with the transfer by one statement; see the journal).
CREATE TABLE confirmations (
  bic text NOT NULL,
  sequence bigint NOT NULL CHECK (sequence > 0),
  debtor_agent text NOT NULL,
  instruction_id text NOT NULL,
  role text NOT NULL CHECK (role IN ('DEBTOR', 'CREDITOR', 'INTERMEDIARY')),
  status text NOT NULL CHECK (status IN ('SETTLED', 'REJECTED', 'EXPIRED')),
  reason_code text NOT NULL DEFAULT '',
  reason text NOT NULL DEFAULT '',
  final_at timestamptz NOT NULL,
  batch_id bigint NOT NULL,
  -- When the confirmation was first written to one of the participant's streams.
  delivered_at timestamptz,
  PRIMARY KEY (bic, sequence)
);

CREATE INDEX confirmations_transfer_idx ON confirmations (debtor_agent, instruction_id);
CREATE INDEX confirmations_final_idx ON confirmations (final_at);

-- The hot tables grow fast from empty: refresh planner statistics early
-- instead of after 10 % growth.
ALTER TABLE transfers SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 5000);
ALTER TABLE confirmations SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 5000);
ALTER TABLE journal_entries SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 5000);
