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
--
-- confirmations.delivered_at stays, no longer written by this version: nodes
-- of the previous version, running alongside during a rolling upgrade (or
-- after a rollback), still set it, and readers take the earlier of it and the
-- ranges. Nothing is copied, so this migration is instant on any table; a
-- later migration may drop the column once no such node can run.
CREATE TABLE confirmation_deliveries (
  bic text NOT NULL,
  first_sequence bigint NOT NULL CHECK (first_sequence > 0),
  last_sequence bigint NOT NULL,
  delivered_at timestamptz NOT NULL,
  -- A range is one stream page (500 confirmations at most today; the bound
  -- leaves room to raise that without a migration). It lets a lookup by
  -- sequence read only the ranges that start at most 999 before it.
  CONSTRAINT confirmation_deliveries_range_bounded
    CHECK (last_sequence >= first_sequence AND last_sequence - first_sequence < 1000)
);

-- INCLUDE: the lookup reads every range starting in its window, often many
-- one-confirmation pages of a live stream; from the index alone.
CREATE INDEX confirmation_deliveries_start_idx ON confirmation_deliveries (bic, first_sequence)
  INCLUDE (last_sequence, delivered_at);

ALTER TABLE confirmation_deliveries SET (autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 5000);
