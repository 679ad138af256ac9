// Composition root: config → store → core → api → server. Tests start nodes
// through here exactly as `npm start` does.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { ConfigError, isLoopbackHost, type Config } from './config.js';
import { locateDatabase, createPool, endPool, type DatabaseLocation } from './store/database.js';
import { migrate } from './store/migrate.js';
import { countParticipants } from './store/participants.js';
import { nextBatchWaitMaxMsDefault, SettlementEngine } from './clearing/engine.js';
import { ClearingCore } from './clearing/core.js';
import { demoExampleCall, seedDemo } from './clearing/demo.js';
import { EventHub } from './clearing/hub.js';
import { ReservationExpirer } from './clearing/expiry.js';
import { startConfirmationRetention } from './clearing/retention.js';
import type { Periodic } from './clearing/periodic.js';
import { NotificationListener } from './store/notifications.js';
import { clearingService } from './api/clearing-service.js';
import { operatorService } from './api/operator-service.js';
import { servingNames, startServer } from './api/server.js';
import type { Logger } from './telemetry/logger.js';
import { ClearingTelemetry, watchPendingReservations } from './telemetry/clearing-telemetry.js';
import { countReservedTransfers, insertConfirmationDeliveries } from './store/reads.js';
import { parseNotification, type SettlementOrigin } from './store/settlement.js';
import { RecentConfirmations } from './clearing/recent-confirmations.js';
import { RecentInbound } from './clearing/recent-inbound.js';
import { DeliveryRecorder } from './clearing/deliveries.js';

export interface RunningNode {
  /** host:port the server listens on (the real port when configured with :0). */
  address: string;
  port: number;
  pool: pg.Pool;
  core: ClearingCore;
  engine: SettlementEngine;
  /** Set when demo participants were seeded: a ready-to-paste example call. */
  exampleCall: string | undefined;
  /** Graceful: stop accepting, finish in-flight calls, drain the queue, close the pool, stop the embedded database. */
  stop(): Promise<void>;
}

/** Most reservations one sweep queues for expiry. */
const expirySweepTransfersMax = 1_000;

export function splitAddress(address: string): { host: string; port: number } {
  const index = address.lastIndexOf(':');
  return { host: address.slice(0, index), port: Number(address.slice(index + 1)) };
}

export async function startNode(config: Config, logger: Logger): Promise<RunningNode> {
  const { host } = splitAddress(config.grpcAddress);
  if (!isLoopbackHost(host)) {
    throw new ConfigError(
      `CLEARING_GRPC_ADDRESS=${config.grpcAddress}: this node version serves plaintext gRPC with development identities ` +
        '(x-principal metadata) and therefore listens only on a loopback address (127.0.0.1, ::1, localhost) until TLS is configured',
    );
  }

  const location: DatabaseLocation = await locateDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    embeddedPort: config.embeddedPostgresPort,
    log: (line) => logger.debug({ component: 'embedded-postgres' }, line),
  });
  const pool = createPool(location.url, config.databasePoolMax, (error) =>
    logger.warn({ err: error }, 'idle database connection failed'),
  );
  const stopDatabase = async () => {
    await endPool(pool).catch(() => undefined);
    await location.embedded?.stop();
  };

  let engine: SettlementEngine | undefined;
  let expirer: ReservationExpirer | undefined;
  let retention: Periodic | undefined;
  const hub = new EventHub();
  const origin: SettlementOrigin = { nodeId: config.nodeId, notificationSource: randomUUID() };
  const recent = new RecentConfirmations();
  const recentInbound = new RecentInbound();
  const deliveries = new DeliveryRecorder((ranges) => insertConfirmationDeliveries(pool, ranges), logger.child({ component: 'deliveries' }));
  const listener = new NotificationListener(
    location.url,
    (payload) => {
      const event = parseNotification(payload);
      // Our own batches woke our streams right after their COMMIT.
      if (event.source !== origin.notificationSource) hub.notify(event.topic);
    },
    () => hub.notifyAll(),
    logger.child({ component: 'notifications' }),
  );
  try {
    const migrated = await migrate(pool, { log: (message) => logger.info(message) });
    logger.info({ applied: migrated.applied, alreadyApplied: migrated.alreadyApplied }, 'database schema ready');

    engine = new SettlementEngine(
      pool,
      origin,
      {
        queueOperationsMax: config.queueOperationsMax,
        batchOperationsMax: config.batchOperationsMax,
        batchWaitMs: config.batchWaitMs,
        batchRetryMax: config.batchRetryMax,
        settlementPipelines: config.settlementPipelines,
        decideAheadOperationsMin: config.decideAheadOperationsMin,
        decideAheadCooldownMs: config.decideAheadCooldownMs,
        nextBatchWaitMaxMs: nextBatchWaitMaxMsDefault,
        transferAmountMaxMinor: config.transferAmountMaxMinor,
        reservationTimeoutMs: config.reservationTimeoutMs,
      },
      logger.child({ component: 'settlement' }),
      (writes) => {
        try {
          recent.add(writes);
          recentInbound.add(writes);
        } finally {
          // Woken either way: without the batch in memory they read it from the database.
          for (const topic of writes.notifications) hub.notify(topic);
        }
      },
      new ClearingTelemetry(),
    );
    watchPendingReservations(() => countReservedTransfers(pool));
    engine.start();
    await listener.start();
    const core = new ClearingCore(pool, engine, hub, recent, deliveries, recentInbound);
    expirer = new ReservationExpirer(
      pool,
      engine,
      { sweepIntervalMs: config.expirySweepIntervalMs, sweepTransfersMax: expirySweepTransfersMax },
      logger.child({ component: 'expiry' }),
    );
    expirer.start();
    retention = startConfirmationRetention(
      pool,
      {
        retentionSeconds: config.confirmationRetentionSeconds,
        sweepIntervalMs: config.retentionSweepIntervalMs,
        purgeChunkMax: 10_000,
        purgeChunksPerSweepMax: 10,
      },
      logger.child({ component: 'retention' }),
    );

    const seed =
      config.seedDemo === 'always' || (config.seedDemo === 'auto' && location.embedded !== undefined && location.createdNow);
    if (seed && (await countParticipants(pool)) === 0) {
      await seedDemo(core);
      logger.info('seeded demo participants ALPHDEFFXXX, BRAVFRPPXXX, CHRLITMMXXX (EUR 1,000,000.00 each) and gateway XBGWUS33XXX');
    }

    // Aborted at shutdown: ends the long-lived streams so the server can drain.
    const closing = new AbortController();
    const server = await startServer(config.grpcAddress, {
      clearing: clearingService(
        core,
        hub,
        {
          submitBatchTransfersMax: config.submitBatchTransfersMax,
          finalWaitMaxMs: config.reservationTimeoutMs + 5_000,
          streamLagMax: config.streamLagMax,
          streamStallMs: config.streamStallMs,
        },
        closing.signal,
        logger,
      ),
      operator: operatorService(core, logger),
    });
    const address = `${host}:${server.port}`;

    let stopping: Promise<void> | undefined;
    const running = engine;
    const sweeper = expirer;
    const purger = retention;
    const stop = () =>
      (stopping ??= (async () => {
        for (const name of servingNames) server.health.setStatus(name, 'NOT_SERVING');
        const grace = setTimeout(() => {
          logger.warn({ graceMs: config.shutdownGraceMs }, 'in-flight calls did not finish in time; cancelling them');
          server.server.forceShutdown();
        }, config.shutdownGraceMs);
        // Streams never finish by themselves: wake them so they see the node is stopping.
        closing.abort();
        hub.notifyAll();
        await new Promise<void>((resolve) => server.server.tryShutdown(() => resolve()));
        clearTimeout(grace);
        await sweeper.stop();
        await purger.stop();
        await running.stop();
        await deliveries.close();
        await listener.stop();
        await stopDatabase();
        logger.info('node stopped');
      })());
    return { address, port: server.port, pool, core, engine, exampleCall: seed ? demoExampleCall(address) : undefined, stop };
  } catch (error) {
    await expirer?.stop();
    await retention?.stop();
    await engine?.stop();
    await listener.stop();
    await stopDatabase();
    throw error;
  }
}
