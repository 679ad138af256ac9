// LISTEN on the events channel with one dedicated connection, so batches
// committed by other node processes wake this node's streams. Reconnects with
// bounded backoff; after a reconnect everyone is woken, because notifications
// sent while disconnected are lost (streams then re-read from their cursor).
import pg from 'pg';
import { eventsChannel } from './settlement.js';
import type { Logger } from '../telemetry/logger.js';

const reconnectDelayMinMs = 100;
const reconnectDelayMaxMs = 5_000;

export class NotificationListener {
  private client: pg.Client | undefined;
  private stopped = false;
  private delayMs = reconnectDelayMinMs;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly url: string,
    private readonly onEvent: (payload: string) => void,
    private readonly onGap: () => void,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    await this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, application_name: 'clearing-node-listener' });
    const lost = (error?: Error) => {
      if (this.client !== client) return;
      if (error !== undefined) this.logger.warn({ err: error }, 'notification connection failed; reconnecting');
      this.client = undefined;
      client.end().catch(() => undefined);
      this.scheduleReconnect();
    };
    client.on('notification', (message) => {
      if (message.channel === eventsChannel && message.payload !== undefined) this.onEvent(message.payload);
    });
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      await client.query(`LISTEN ${eventsChannel}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    this.client = client;
    this.delayMs = reconnectDelayMinMs;
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.timer !== undefined) return;
    // Whatever was notified while we were away is lost: wake everyone to re-read.
    this.onGap();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.connect().then(
        () => this.onGap(),
        (error: unknown) => {
          this.logger.warn({ err: error, retryInMs: this.delayMs }, 'notification connection could not be opened');
          this.delayMs = Math.min(this.delayMs * 2, reconnectDelayMaxMs);
          this.scheduleReconnect();
        },
      );
    }, this.delayMs);
  }
}
