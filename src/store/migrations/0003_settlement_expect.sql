-- 0003: settlement_expect, the check that lets a batch be decided before its
-- locks are taken.
--
-- A batch read under its locks holds them for two round trips and two trips
-- through the node's event loop (lock + read, then decide, write + COMMIT).
-- A node that has settled the previous batches on these participants already
-- knows what the read would return, so it decides first and then sends lock,
-- check, write and COMMIT in one round trip; the locks are held only while
-- Postgres runs them. This function is the check: it takes the same locks in
-- the same sorted order as a batch read under its locks, then compares every
-- participant and position the batch was decided against with what is
-- stored. Any difference (another node's batch, an operator's change, a batch
-- of this node that failed) aborts the transaction with serialization_failure,
-- and the node decides the batch again, reading under the locks.
CREATE FUNCTION settlement_expect(
  participant_bics text[],
  participant_kinds text[],
  participant_statuses text[],
  participant_acceptance_modes text[],
  participant_confirmation_sequences bigint[],
  participant_inbound_sequences bigint[],
  position_bics text[],
  position_currencies text[],
  position_balances bigint[],
  position_reserved bigint[],
  position_debit_caps bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  changed bigint;
BEGIN
  -- Sorted by BIC, as every settlement batch locks: no cycle, so no deadlock.
  PERFORM 1 FROM participants WHERE bic = ANY(participant_bics) ORDER BY bic FOR NO KEY UPDATE;
  -- Each statement of a VOLATILE function sees what committed before it
  -- started: everything committed before the locks were granted.
  SELECT count(*) INTO changed
    FROM unnest(participant_bics, participant_kinds, participant_statuses, participant_acceptance_modes,
                participant_confirmation_sequences, participant_inbound_sequences)
           AS e(bic, kind, status, acceptance_mode, confirmation_sequence, inbound_sequence)
    LEFT JOIN participants p ON p.bic = e.bic
   WHERE p.bic IS NULL
      OR (p.kind, p.status, p.acceptance_mode, p.confirmation_sequence, p.inbound_sequence)
         IS DISTINCT FROM (e.kind, e.status, e.acceptance_mode, e.confirmation_sequence, e.inbound_sequence);
  IF changed = 0 THEN
    SELECT count(*) INTO changed
      FROM unnest(position_bics, position_currencies, position_balances, position_reserved, position_debit_caps)
             AS e(bic, currency, balance_minor, reserved_minor, debit_cap_minor)
      LEFT JOIN positions p ON p.bic = e.bic AND p.currency = e.currency
     WHERE p.bic IS NULL
        OR (p.balance_minor, p.reserved_minor, p.debit_cap_minor)
           IS DISTINCT FROM (e.balance_minor, e.reserved_minor, e.debit_cap_minor);
  END IF;
  IF changed > 0 THEN
    RAISE EXCEPTION 'settlement_expect: % participant or position row(s) changed since the batch was decided', changed
      USING ERRCODE = 'serialization_failure';
  END IF;
END $$;
