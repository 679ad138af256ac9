// Entry point: `npm start` runs the node; `npm run migrate` applies the schema and exits.
import { ConfigError, loadConfig } from './config.js';
import { startNode } from './node.js';
import { locateDatabase, createPool } from './store/database.js';
import { migrate } from './store/migrate.js';
import { createLogger } from './telemetry/logger.js';

async function main(command: string): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel, { node: config.nodeId });

  if (command === 'migrate') {
    const location = await locateDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      embeddedPort: config.embeddedPostgresPort,
      log: (line) => logger.debug({ component: 'embedded-postgres' }, line),
    });
    const pool = createPool(location.url, 2);
    try {
      const result = await migrate(pool, { log: (message) => logger.info(message) });
      logger.info({ applied: result.applied, alreadyApplied: result.alreadyApplied }, 'migrations done');
    } finally {
      await pool.end();
      await location.embedded?.stop();
    }
    return;
  }
  if (command !== 'start') throw new ConfigError(`unknown command '${command}': use 'start' (default) or 'migrate'`);

  const node = await startNode(config, logger);
  logger.info({ address: node.address }, 'clearing node serving');
  if (node.exampleCall !== undefined) process.stderr.write(`\nDemo banks are ready. Try:\n\n${node.exampleCall}\n\n`);
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutting down');
    node.stop().then(
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
