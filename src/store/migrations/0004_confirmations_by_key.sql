-- 0004: confirmations found by their key only; two secondary indexes fewer.
--
-- Every settled transfer writes two confirmations (three with an
-- intermediary), and each confirmation wrote three index entries: its
-- primary key (bic, sequence), which the streams read by, plus
-- confirmations_transfer_idx (for InspectTransfer) and
-- confirmations_final_idx (for retention). Index entries are most of what a
-- confirmation costs inside a settlement batch, which holds its locks while
-- it writes them; measured on 1,000-row inserts, the two secondary indexes
-- were about a third of the confirmations' time.
--
-- Instead:
-- * the transfer keeps the sequence numbers of its confirmations (three
--   nullable bigints on a row the batch writes anyway), so InspectTransfer
--   reads them by primary key;
-- * retention walks each participant's confirmations in sequence order by
--   the primary key and purges the oldest run of them past the retention
--   period (src/store/retention.ts).
--
-- The columns are filled here for the confirmations kept so far (retention
-- bounds them: 30 days by default). That copy rewrites each such transfer
-- while this migration holds transfers exclusively, so no batch settles
-- meanwhile: measured 48 s for a million settled transfers with two
-- confirmations each (Postgres 15, 2 cores), longer than the node's
-- statement timeout, which is lifted for this transaction. Plan the upgrade
-- for a quiet window and stop every node of the previous version first: one
-- still running writes confirmations without filling the columns, and
-- InspectTransfer then never shows confirmation events for the transfers it
-- finalized; its own InspectTransfer and retention, without their indexes,
-- read the whole confirmations table.
SET LOCAL statement_timeout = 0;

ALTER TABLE transfers
  ADD COLUMN debtor_confirmation bigint CHECK (debtor_confirmation > 0),
  ADD COLUMN creditor_confirmation bigint CHECK (creditor_confirmation > 0),
  ADD COLUMN intermediary_confirmation bigint CHECK (intermediary_confirmation > 0);

-- Final transfers are immutable (a trigger refuses any change); this copy
-- adds what the row already implied, so the trigger is off for it alone,
-- inside this migration's transaction.
ALTER TABLE transfers DISABLE TRIGGER transfers_final_is_immutable;
UPDATE transfers t
   SET debtor_confirmation = c.debtor, creditor_confirmation = c.creditor, intermediary_confirmation = c.intermediary
  FROM (SELECT debtor_agent, instruction_id,
               max(sequence) FILTER (WHERE role = 'DEBTOR') AS debtor,
               max(sequence) FILTER (WHERE role = 'CREDITOR') AS creditor,
               max(sequence) FILTER (WHERE role = 'INTERMEDIARY') AS intermediary
          FROM confirmations GROUP BY debtor_agent, instruction_id) c
 WHERE t.debtor_agent = c.debtor_agent AND t.instruction_id = c.instruction_id;
ALTER TABLE transfers ENABLE TRIGGER transfers_final_is_immutable;

DROP INDEX confirmations_transfer_idx;
DROP INDEX confirmations_final_idx;
