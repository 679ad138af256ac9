// Checking a connection out of the pool for a transaction.
//
// While a client is checked out, pg-pool does not listen for its 'error'
// event; a connection lost mid-transaction would then crash the process with
// an unhandled 'error'. withClient listens for the checkout's duration and
// discards (rather than reuses) a client that failed outside Postgres' own
// error reporting or that lost its connection.
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
  return withClient(pool, async (client) => {
    await client.query(begin);
    try {
      const result = await run(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}
