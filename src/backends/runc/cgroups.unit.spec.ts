import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cgroupV2Stats, memoryCgroupOomKills } from './cgroups.js';

/** A directory standing in for /sys/fs/cgroup, removed after the file's specs; `write` puts a file under it. */
function fakeCgroupRoot() {
  const root = mkdtempSync(path.join(tmpdir(), 'kts-cgroup-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const write = (relative: string, text: string) => {
    mkdirSync(path.dirname(path.join(root, relative)), { recursive: true });
    writeFileSync(path.join(root, relative), text);
  };
  return { root, write };
}

describe('memoryCgroupOomKills', () => {
  const { root, write } = fakeCgroupRoot();
  write('memory/k8s.io/v1/memory.oom_control', 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n');
  write('k8s.io/v2/memory.events', 'low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n');
  write('secret/memory.oom_control', 'oom_kill 9\n');

  it('reads the count of cgroup v1 (memory.oom_control) and v2 (memory.events)', async () => {
    expect(await memoryCgroupOomKills('/k8s.io/v1', root)).toBe(2);
    expect(await memoryCgroupOomKills('/k8s.io/v2', root)).toBe(1);
  });

  it('answers nothing for a cgroup that is gone, a systemd slice path, or a path that climbs out of the hierarchy', async () => {
    expect(await memoryCgroupOomKills('/k8s.io/gone', root)).toBeUndefined();
    expect(await memoryCgroupOomKills('system.slice:cri:abc', root)).toBeUndefined();
    expect(await memoryCgroupOomKills('/../secret', root)).toBeUndefined();
    expect(await memoryCgroupOomKills('/k8s.io/../../secret', root)).toBeUndefined();
    expect(await memoryCgroupOomKills(42, root)).toBeUndefined();
  });
});

describe('cgroupV2Stats (crun has no `events --stats`)', () => {
  const { root, write } = fakeCgroupRoot();
  write('kts/p1/c1/cpu.stat', 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 3\nthrottled_usec 250\n');
  write('kts/p1/c1/memory.current', '4096\n');
  write('kts/p1/c1/memory.max', '1048576\n');
  write('kts/p1/c1/pids.current', '2\n');
  write('kts/p1/c1/pids.max', 'max\n');

  it('reads a container\'s cpu, memory and pids from its cgroup, in the units runc reports them', async () => {
    expect(await cgroupV2Stats('/kts/p1/c1', root)).toEqual({
      cpuUsageNanos: 1_500_000, cpuUserNanos: 1_000_000, cpuKernelNanos: 500_000, cpuPeriods: 10, cpuThrottledPeriods: 3, cpuThrottledNanos: 250_000,
      memoryUsageBytes: 4096, memoryLimitBytes: 1_048_576, memorySwapBytes: 0, pidsCurrent: 2, pidsLimit: 0,
    });
  });

  it('answers nothing for a cgroup that is gone or a path that is not a cgroupfs one', async () => {
    expect(await cgroupV2Stats('/kts/p1/gone', root)).toBeUndefined();
    expect(await cgroupV2Stats('system.slice:crun:c1', root)).toBeUndefined();
    expect(await cgroupV2Stats(undefined, root)).toBeUndefined();
  });
});
