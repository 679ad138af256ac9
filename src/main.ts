// Entry point: `npm start` runs the node; `npm run migrate` applies the schema and exits.
//
// OpenTelemetry starts first and the rest of the node is imported only then,
// so the gRPC and pg instrumentations patch those modules as they load.
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './telemetry/logger.js';
import { startTelemetry } from './telemetry/sdk.js';

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

async function main(command: string): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel, { node: config.nodeId });

  if (command === 'migrate') {
    const { locateDatabase, createPool, endPool } = await import('./store/database.js');
    const { migrate } = await import('./store/migrate.js');
    const location = await locateDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      embeddedPort: config.embeddedPostgresPort,
      log: (line) => logger.debug({ component: 'embedded-postgres' }, line),
    });
    const pool = createPool(location.url, 2, (error) => logger.warn({ err: error }, 'idle database connection failed'));
    try {
      const result = await migrate(pool, { log: (message) => logger.info(message) });
      logger.info({ applied: result.applied, alreadyApplied: result.alreadyApplied }, 'migrations done');
    } finally {
      await endPool(pool);
      await location.embedded?.stop();
    }
    return;
  }
  if (command !== 'start') throw new ConfigError(`unknown command '${command}': use 'start' (default) or 'migrate'`);

  const telemetry = await startTelemetry({ serviceVersion: version, instanceId: config.nodeId, metricsAddress: config.metricsAddress });
  const { startNode } = await import('./node.js');
  let node;
  try {
    node = await startNode(config, logger);
  } catch (error) {
    await telemetry.shutdown();
    throw error;
  }
  logger.info({ address: node.address, metricsPort: telemetry.metricsPort, version }, 'clearing node serving');
  if (node.exampleCall !== undefined) process.stderr.write(`\nDemo banks are ready. Try:\n\n${node.exampleCall}\n\n`);
  const running = node;
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutting down');
    running
      .stop()
      .then(() => telemetry.shutdown())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
}

main(process.argv[2] ?? 'start').catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`clearing node: ${error.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`clearing node failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
