import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { memoryCgroupOomKills } from './cgroups.js';

describe('memoryCgroupOomKills', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'kts-cgroup-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const write = (relative: string, text: string) => {
    mkdirSync(path.dirname(path.join(root, relative)), { recursive: true });
    writeFileSync(path.join(root, relative), text);
  };
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
