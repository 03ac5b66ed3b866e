import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { vmPaths } from '../vmPaths.js';
import { consoleTail, readTail } from './qemuHypervisor.js';

describe('the console tail shown in boot errors', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kts-console-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads only the last bytes of a console the guest filled', async () => {
    const file = path.join(dir, 'console.log');
    writeFileSync(file, `${'x'.repeat(20 * 1024 * 1024)}Kernel panic - not syncing`);
    expect(await readTail(file, 64)).toMatch(/x+Kernel panic - not syncing$/);
    expect((await readTail(file, 64)).length).toBe(64);
  });

  it('falls back to QEMU\'s own log when the console is empty', async () => {
    const paths = vmPaths(dir, 'pod');
    execFileSync('mkdir', ['-p', paths.dir]);
    writeFileSync(paths.consoleLog, '');
    writeFileSync(paths.qemuLog, 'qemu: could not open kernel');
    expect(await consoleTail(paths)).toBe('qemu: could not open kernel');
  });

  it('gives nothing for a FIFO or a link in its place, without blocking', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    symlinkSync('/etc/passwd', path.join(dir, 'link'));
    expect(await readTail(fifo, 64)).toBe('');
    expect(await readTail(path.join(dir, 'link'), 64)).toBe('');
  });
});
