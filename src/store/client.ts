// Checking a connection out of the pool for a transaction.
//
// While a client is checked out, pg-pool does not listen for its 'error'
// event; a connection lost mid-transaction would then crash the process with
// an unhandled 'error'. withClient listens for the checkout's duration and
// discards (rather than reuses) a client that failed outside Postgres' own
// error reporting or that lost its connection.
import type { Writable } from 'node:stream';
import pg from 'pg';

export async function withClient<T>(pool: pg.Pool, run: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (error: Error) => {
    broken = error;
  };
  client.on('error', onError);
  try {
    return await run(client);
  } catch (error) {
    // A Postgres error leaves the connection usable (after ROLLBACK); anything else may not.
    if (!(error instanceof pg.DatabaseError)) broken ??= error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/** Runs `run` in a transaction: COMMIT after it, ROLLBACK if it throws. */
export async function inTransaction<T>(pool: pg.Pool, begin: string, run: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, (client) => transactionOn(client, begin, run));
}

/** Runs `run` in a transaction on a client already checked out (see withClient). */
export async function transactionOn<T>(client: pg.PoolClient, begin: string, run: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  await client.query(begin);
  try {
    const result = await run(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * Sends `queries` on one connection without waiting between them (the pool's
 * connections pipeline, and the socket is corked while they are queued, so
 * they leave in one write). Returns each query's promise, to be awaited in
 * order; see queryInOrder.
 */
export function sendInOrder(client: pg.PoolClient, queries: (pg.QueryConfig | string)[]): Promise<pg.QueryResult>[] {
  // Corked, the queries' messages leave in one write (one syscall, one wake-up
  // of the backend) instead of one write per query: a pipelined query is
  // written out as soon as it is queued. Uncorked whatever query() throws.
  // `connection.stream` is node-postgres' socket (not in its typings).
  const stream = (client as unknown as { connection?: { stream?: Partial<Writable> } }).connection?.stream;
  stream?.cork?.();
  try {
    return queries.map((q) => client.query(q as pg.QueryConfig));
  } finally {
    stream?.uncork?.();
  }
}

/**
 * Sends `queries` as sendInOrder does, then waits for all of them: one round
 * trip and one trip through this process's event loop for the lot. Throws the
 * first failure; Postgres then has aborted the transaction, so the queries
 * after it did nothing (a COMMIT after a failure rolls back).
 */
export async function queryInOrder(client: pg.PoolClient, queries: (pg.QueryConfig | string)[]): Promise<pg.QueryResult[]> {
  return settleInOrder(sendInOrder(client, queries));
}

/** Waits for every sent query; throws the first failure. */
export async function settleInOrder(sent: Promise<pg.QueryResult>[]): Promise<pg.QueryResult[]> {
  const settled = await Promise.allSettled(sent);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<pg.QueryResult>).value);
}
