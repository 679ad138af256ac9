-- 0005: transfers listed by receipt time through a one-column index.
--
-- ListTransfers pages through transfers newest first by (received_at,
-- debtor_agent, instruction_id), and transfers_received_idx held all three
-- columns: a wide entry with two text keys for every transfer a settlement
-- batch writes, while the batch holds its locks. All the transfers of one
-- SubmitTransfers call share their receipt time, so each insert compared the
-- texts of its neighbours, through the database's collation: under a libc
-- collation such as C.UTF-8 or en_US.UTF-8 that is strcoll, not memcmp.
-- Measured in the benchmark's batch workload, interleaved pairs: on
-- Postgres 15 with C.UTF-8, 25,386 / 20,890 / 21,300 -> 27,297 / 22,298 /
-- 25,899 settled/s (+12 %); on the embedded Postgres 17 (collation C),
-- seven pairs, within the spread (-1 % on the means).
--
-- received_at alone serves the same pages: the page's row comparison becomes
-- an index condition on its first column (received_at <= the key's), and the
-- rows of one receipt time are sorted among themselves (an incremental sort).
-- The price: a page also reads the rest of the receipt times it starts and
-- ends in, up to one SubmitTransfers call's transfers each (1,000 by
-- default) more than the old index read. Many transfers share a receipt
-- time; B-tree deduplication (Postgres 13+) keeps those entries small.
--
-- CREATE INDEX holds off writes to transfers while it builds, inside this
-- migration's transaction (measured: 0.5 s for a million 350-byte rows in
-- memory, Postgres 15, 2 cores; longer when the table must be read from
-- disk), and DROP INDEX then holds off reads too, briefly. Each waits at most
-- the node's lock_timeout (2 s) for the transactions before it; past that the
-- migration fails, nothing is changed, and the next start tries again. Plan
-- the upgrade for a quiet moment on a large table.
SET LOCAL statement_timeout = 0;

CREATE INDEX transfers_received_at_idx ON transfers (received_at);
DROP INDEX transfers_received_idx;
