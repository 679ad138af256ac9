-- 0002: when confirmations were first delivered, as a log of delivered ranges
-- instead of a column on each confirmation.
--
-- Setting confirmations.delivered_at rewrote every delivered confirmation: a
-- new row version and three index entries each (not a HOT update: the pages
-- are full), measured at ~55 µs of Postgres time per confirmation, more than
-- writing the confirmation in the first place. With every bank subscribed, as
-- in production, that was two such updates per settled transfer. A stream
-- writes its confirmations a page at a time in sequence order, so one row per
-- page says the same: confirmations first_sequence..last_sequence of bic
-- were written to a stream at delivered_at. A confirmation's delivery time is
-- the earliest delivered_at of the ranges that hold it (a resumed stream, or
-- a second subscriber of the same bank, delivers some again).
CREATE TABLE confirmation_deliveries (
  bic text NOT NULL,
  first_sequence bigint NOT NULL CHECK (first_sequence > 0),
  last_sequence bigint NOT NULL,
  delivered_at timestamptz NOT NULL,
  -- A range is one stream page (at most 500 confirmations); the bound lets a
  -- lookup by sequence read only the ranges that start close before it.
  CONSTRAINT confirmation_deliveries_range_bounded
    CHECK (last_sequence >= first_sequence AND last_sequence - first_sequence < 1000)
);

CREATE INDEX confirmation_deliveries_start_idx ON confirmation_deliveries (bic, first_sequence);

-- Marks written before this migration become one-confirmation ranges.
INSERT INTO confirmation_deliveries (bic, first_sequence, last_sequence, delivered_at)
SELECT bic, sequence, sequence, delivered_at FROM confirmations WHERE delivered_at IS NOT NULL;

ALTER TABLE confirmations DROP COLUMN delivered_at;

ALTER TABLE confirmation_deliveries SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 5000);
