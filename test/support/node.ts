// Starts a real clearing node in-process on an ephemeral loopback port, on a
// fresh database of the test server, exactly as `npm start` composes it.
import { loadConfig, type Config } from '../../src/config.js';
import { startNode, type RunningNode } from '../../src/node.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createBareDatabase } from './database.js';
import { clearingClient, operatorClient } from './clients.js';

export interface TestNode {
  node: RunningNode;
  databaseUrl: string;
  operator: ReturnType<typeof operatorClient>;
  participant(bic: string): ReturnType<typeof clearingClient>;
  /** Stops the node and drops its database. */
  stop(): Promise<void>;
}

export async function startTestNode(
  env: Record<string, string> = {},
  databaseUrl?: string,
  /** Where the node's log lines go (stdout when unset). */
  logDestination?: { write(line: string): void },
): Promise<TestNode> {
  const bare = databaseUrl === undefined ? await createBareDatabase() : undefined;
  const url = databaseUrl ?? (bare?.url as string);
  const config: Config = loadConfig({
    CLEARING_GRPC_ADDRESS: '127.0.0.1:0',
    CLEARING_LOG_LEVEL: process.env.CLEARING_TEST_LOG_LEVEL ?? 'silent',
    CLEARING_SEED_DEMO: 'never',
    CLEARING_SHUTDOWN_GRACE_MS: '2000',
    ...env,
    DATABASE_URL: url,
  });
  const node = await startNode(config, createLogger(config.logLevel, { node: config.nodeId }, logDestination));
  const operator = operatorClient(node.address);
  const clients: { close(): void }[] = [operator.raw];
  return {
    node,
    databaseUrl: url,
    operator,
    participant(bic: string) {
      const client = clearingClient(node.address, `participant/${bic}`);
      clients.push(client.raw);
      return client;
    },
    async stop() {
      for (const c of clients) c.close();
      await node.stop();
      await bare?.drop();
    },
  };
}
