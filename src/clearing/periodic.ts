// A background job run every `intervalMs`, never overlapping itself; stop()
// waits for a run in progress.
export interface Periodic {
  stop(): Promise<void>;
}

export function runPeriodically(intervalMs: number, run: () => Promise<void>): Periodic {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const tick = () => {
    if (stopped) return;
    running = run().finally(() => {
      running = undefined;
      if (!stopped) timer = setTimeout(tick, intervalMs);
    });
  };
  tick();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
