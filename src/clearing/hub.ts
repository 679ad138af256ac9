// Wake-ups for streams and waiters, by topic (`inbound:<BIC>`,
// `confirmations:<BIC>`). Fed by this node's engine after each commit and by
// Postgres LISTEN/NOTIFY for batches committed by other node processes.
// Waiters always wait with a timeout, so a lost notification only delays.

type Waiter = () => void;

export class EventHub {
  private readonly waiters = new Map<string, Set<Waiter>>();

  /** Wakes everyone waiting on `topic`. */
  notify(topic: string): void {
    const set = this.waiters.get(topic);
    if (set === undefined) return;
    this.waiters.delete(topic);
    for (const wake of set) wake();
  }

  /** Wakes every waiter (after a lost connection to the notification source). */
  notifyAll(): void {
    for (const topic of [...this.waiters.keys()]) this.notify(topic);
  }

  /** Resolves on the next notify of `topic`, after `timeoutMs`, or when `abort` fires. */
  wait(topic: string, timeoutMs: number, abort?: AbortSignal): Promise<void> {
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
}
