// Wake-ups for streams and waiters, by topic (`inbound:<BIC>`,
// `confirmations:<BIC>`). Fed by this node's engine after each commit and by
// Postgres LISTEN/NOTIFY for batches committed by other node processes.
// Waiters always wait with a timeout, so a lost notification only delays.
//
// A reader takes the topic's version before it reads and passes it to wait():
// a notification that came while it was reading (when nobody was waiting)
// then ends the wait at once instead of leaving the reader asleep until its
// timeout with news it has not read.

type Waiter = () => void;

export class EventHub {
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** Per topic, the counter value of its latest notification (one entry per topic ever notified: per participant). */
  private readonly versions = new Map<string, number>();
  /** The counter value of the latest notifyAll. */
  private allNotifiedAt = 0;
  private counter = 0;

  /** Changes whenever `topic` is notified: take it before reading, pass it to wait(). */
  version(topic: string): number {
    return Math.max(this.versions.get(topic) ?? 0, this.allNotifiedAt);
  }

  /** Wakes everyone waiting on `topic`. */
  notify(topic: string): void {
    this.versions.set(topic, ++this.counter);
    this.wake(topic);
  }

  /** Wakes every waiter (after a lost connection to the notification source). */
  notifyAll(): void {
    this.allNotifiedAt = ++this.counter;
    for (const topic of [...this.waiters.keys()]) this.wake(topic);
  }

  /**
   * Resolves on the next notify of `topic`, after `timeoutMs`, or when `abort`
   * fires; at once if `seenVersion` is given and the topic was notified since.
   */
  wait(topic: string, timeoutMs: number, abort?: AbortSignal, seenVersion?: number): Promise<void> {
    if (seenVersion !== undefined && this.version(topic) !== seenVersion) return Promise.resolve();
    return new Promise((resolve) => {
      let set = this.waiters.get(topic);
      if (set === undefined) this.waiters.set(topic, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        abort?.removeEventListener('abort', done);
        this.waiters.get(topic)?.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      abort?.addEventListener('abort', done, { once: true });
      set.add(done);
    });
  }

  private wake(topic: string): void {
    const set = this.waiters.get(topic);
    if (set === undefined) return;
    this.waiters.delete(topic);
    for (const wake of set) wake();
  }
}
