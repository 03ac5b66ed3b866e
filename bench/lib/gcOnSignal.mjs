// Preloaded into a bench's daemon (`node --expose-gc --import <this file>`), never into a real one:
// on SIGUSR2 it runs a full garbage collection and writes process.memoryUsage() and the size of
// each V8 heap space (committed, and used by live objects) as JSON into
// $KTS_BENCH_GC_MARKER, so the bench can see what the daemon's JS keeps, without garbage.
import { renameSync, writeFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

process.on('SIGUSR2', () => {
  globalThis.gc();
  // Written aside and renamed, so the bench never reads half of it.
  const marker = process.env.KTS_BENCH_GC_MARKER;
  writeFileSync(`${marker}.tmp`, JSON.stringify({
    at: Date.now(), ...process.memoryUsage(),
    spaces: Object.fromEntries(getHeapSpaceStatistics().map((space) => [space.space_name, { size: space.space_size, used: space.space_used_size }])),
  }));
  renameSync(`${marker}.tmp`, marker);
});
