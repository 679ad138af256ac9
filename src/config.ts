// Node configuration from environment variables, validated once at start-up.
// A bad value stops the node with a message that names the variable.
import { z } from 'zod';

const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function integer(min: number, max: number, fallback: number) {
  return z
    .string()
    .trim()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .default(fallback);
}

// ISO 20022 amounts are int64 minor units; the per-transfer maximum is given the same way.
const minorUnits = z
  .string()
  .trim()
  .regex(/^\d{1,19}$/, 'must be a whole number of minor units')
  .transform((s) => BigInt(s))
  .refine((v) => v > 0n && v <= 9_223_372_036_854_775_807n, 'must be between 1 and 2^63-1');

const environment = z.object({
  DATABASE_URL: z
    .string()
    .trim()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// connection URL')
    .optional(),
  CLEARING_GRPC_ADDRESS: z
    .string()
    .trim()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:50051')
    .default('127.0.0.1:50051'),
  CLEARING_DATA_DIR: z.string().trim().min(1).default('./.data'),
  CLEARING_EMBEDDED_POSTGRES_PORT: integer(0, 65535, 0),
  CLEARING_LOG_LEVEL: z.enum(levels).default('info'),
  CLEARING_METRICS_ADDRESS: z
    .string()
    .trim()
    .regex(/^(none|(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5})$/, "must be host:port (e.g. 127.0.0.1:9464) or 'none'")
    .default('127.0.0.1:9464'),
  CLEARING_NODE_ID: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, dot, dash or underscore')
    .optional(),
  CLEARING_DATABASE_POOL_MAX: integer(2, 500, 10),
  CLEARING_TRANSFER_AMOUNT_MAX_MINOR: minorUnits.default(10_000_000_000n),
  CLEARING_SUBMIT_BATCH_TRANSFERS_MAX: integer(1, 8190, 1000),
  CLEARING_QUEUE_OPERATIONS_MAX: integer(1, 1_000_000, 50_000),
  CLEARING_BATCH_OPERATIONS_MAX: integer(1, 8190, 1000),
  CLEARING_BATCH_WAIT_MS: integer(0, 100, 0),
  CLEARING_BATCH_RETRY_MAX: integer(0, 20, 5),
  CLEARING_SETTLEMENT_PIPELINES: integer(1, 8, 2),
  CLEARING_DECIDE_AHEAD_OPERATIONS_MIN: integer(0, 8190, 100),
  CLEARING_DECIDE_AHEAD_COOLDOWN_MS: integer(0, 60_000, 1_000),
  CLEARING_SHUTDOWN_GRACE_MS: integer(0, 600_000, 10_000),
  CLEARING_RESERVATION_TIMEOUT_MS: integer(100, 600_000, 10_000),
  CLEARING_EXPIRY_SWEEP_INTERVAL_MS: integer(10, 60_000, 200),
  CLEARING_CONFIRMATION_RETENTION_SECONDS: integer(1, 10 * 365 * 86_400, 30 * 86_400),
  CLEARING_RETENTION_SWEEP_INTERVAL_MS: integer(10, 86_400_000, 60_000),
  CLEARING_STREAM_LAG_MAX: integer(1, 100_000_000, 100_000),
  CLEARING_STREAM_STALL_MS: integer(1_000, 3_600_000, 60_000),
  CLEARING_SEED_DEMO: z.enum(['auto', 'always', 'never']).default('auto'),
});

export interface Config {
  databaseUrl: string | undefined;
  grpcAddress: string;
  dataDir: string;
  embeddedPostgresPort: number;
  logLevel: (typeof levels)[number];
  /** Where Prometheus scrapes /metrics; empty when disabled. */
  metricsAddress: string;
  nodeId: string;
  databasePoolMax: number;
  /** Largest amount of one transfer; above it the transfer is rejected AM02. */
  transferAmountMaxMinor: bigint;
  /** Most transfers in one SubmitTransfers call. */
  submitBatchTransfersMax: number;
  /** Most operations waiting for the settlement loop; beyond it calls get RESOURCE_EXHAUSTED. */
  queueOperationsMax: number;
  /** Most operations settled in one Postgres transaction. */
  batchOperationsMax: number;
  /** How long the loop lingers for more operations before settling a batch that is not full. */
  batchWaitMs: number;
  /** How often a batch is retried after a deadlock, serialization failure or lost race. */
  batchRetryMax: number;
  /** How many settlement batches may be in flight at once (each its own transaction). */
  settlementPipelines: number;
  /** Batches of at least this many operations are decided before their locks are taken (0 = never). */
  decideAheadOperationsMin: number;
  /** After Postgres refused a batch decided ahead, batches are read under their locks for this long. */
  decideAheadCooldownMs: number;
  /** How long shutdown waits for in-flight calls before cancelling them. */
  shutdownGraceMs: number;
  /** How long a reservation waits for an EXPLICIT creditor's answer before it expires (AB05). */
  reservationTimeoutMs: number;
  /** How often each node looks for reservations past their timeout. */
  expirySweepIntervalMs: number;
  /** How long confirmations are kept (default 30 days). */
  confirmationRetentionSeconds: number;
  /** How often each node purges confirmations past retention. */
  retentionSweepIntervalMs: number;
  /** A confirmation stream whose client does not read and is this many confirmations behind is ended. */
  streamLagMax: number;
  /** A confirmation stream whose client has not read for this long is ended. */
  streamStallMs: number;
  /** Seed demo banks into a brand-new embedded database ('auto'), always, or never. */
  seedDemo: 'auto' | 'always' | 'never';
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(
    Object.entries(env).filter(([key, value]) => key in environment.shape && value !== undefined && value !== ''),
  );
  const parsed = environment.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const name = String(issue.path[0] ?? '?');
      return `  ${name}=${JSON.stringify(env[name] ?? '')}: ${issue.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  if (e.CLEARING_DATABASE_POOL_MAX < e.CLEARING_SETTLEMENT_PIPELINES + 1) {
    throw new ConfigError(
      `invalid configuration:\n  CLEARING_DATABASE_POOL_MAX=${e.CLEARING_DATABASE_POOL_MAX} must exceed ` +
        `CLEARING_SETTLEMENT_PIPELINES=${e.CLEARING_SETTLEMENT_PIPELINES}: each pipeline holds a connection, and reads need one more`,
    );
  }
  if (e.CLEARING_QUEUE_OPERATIONS_MAX < Math.max(e.CLEARING_BATCH_OPERATIONS_MAX, e.CLEARING_SUBMIT_BATCH_TRANSFERS_MAX)) {
    throw new ConfigError(
      `invalid configuration:\n  CLEARING_QUEUE_OPERATIONS_MAX=${e.CLEARING_QUEUE_OPERATIONS_MAX} must be at least ` +
        `CLEARING_BATCH_OPERATIONS_MAX=${e.CLEARING_BATCH_OPERATIONS_MAX} and CLEARING_SUBMIT_BATCH_TRANSFERS_MAX=${e.CLEARING_SUBMIT_BATCH_TRANSFERS_MAX}`,
    );
  }
  // Only when set: the default above a small CLEARING_BATCH_OPERATIONS_MAX just means never.
  if ('CLEARING_DECIDE_AHEAD_OPERATIONS_MIN' in present && e.CLEARING_DECIDE_AHEAD_OPERATIONS_MIN > e.CLEARING_BATCH_OPERATIONS_MAX) {
    throw new ConfigError(
      `invalid configuration:\n  CLEARING_DECIDE_AHEAD_OPERATIONS_MIN=${e.CLEARING_DECIDE_AHEAD_OPERATIONS_MIN} must not exceed ` +
        `CLEARING_BATCH_OPERATIONS_MAX=${e.CLEARING_BATCH_OPERATIONS_MAX} (no batch could reach it); 0 turns deciding ahead off`,
    );
  }
  return {
    databaseUrl: e.DATABASE_URL,
    grpcAddress: e.CLEARING_GRPC_ADDRESS,
    dataDir: e.CLEARING_DATA_DIR,
    embeddedPostgresPort: e.CLEARING_EMBEDDED_POSTGRES_PORT,
    logLevel: e.CLEARING_LOG_LEVEL,
    metricsAddress: e.CLEARING_METRICS_ADDRESS === 'none' ? '' : e.CLEARING_METRICS_ADDRESS,
    nodeId: e.CLEARING_NODE_ID ?? `node-${process.pid}`,
    databasePoolMax: e.CLEARING_DATABASE_POOL_MAX,
    transferAmountMaxMinor: e.CLEARING_TRANSFER_AMOUNT_MAX_MINOR,
    submitBatchTransfersMax: e.CLEARING_SUBMIT_BATCH_TRANSFERS_MAX,
    queueOperationsMax: e.CLEARING_QUEUE_OPERATIONS_MAX,
    batchOperationsMax: e.CLEARING_BATCH_OPERATIONS_MAX,
    batchWaitMs: e.CLEARING_BATCH_WAIT_MS,
    batchRetryMax: e.CLEARING_BATCH_RETRY_MAX,
    settlementPipelines: e.CLEARING_SETTLEMENT_PIPELINES,
    decideAheadOperationsMin: e.CLEARING_DECIDE_AHEAD_OPERATIONS_MIN,
    decideAheadCooldownMs: e.CLEARING_DECIDE_AHEAD_COOLDOWN_MS,
    shutdownGraceMs: e.CLEARING_SHUTDOWN_GRACE_MS,
    seedDemo: e.CLEARING_SEED_DEMO,
    reservationTimeoutMs: e.CLEARING_RESERVATION_TIMEOUT_MS,
    expirySweepIntervalMs: e.CLEARING_EXPIRY_SWEEP_INTERVAL_MS,
    confirmationRetentionSeconds: e.CLEARING_CONFIRMATION_RETENTION_SECONDS,
    retentionSweepIntervalMs: e.CLEARING_RETENTION_SWEEP_INTERVAL_MS,
    streamLagMax: e.CLEARING_STREAM_LAG_MAX,
    streamStallMs: e.CLEARING_STREAM_STALL_MS,
  };
}

/** True when host names the loopback interface, the only place the development identity is accepted. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  return bare === 'localhost' || bare === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}
