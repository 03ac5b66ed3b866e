import { execFileSync } from 'node:child_process';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rotateIfOver, rotatedPath, startLogRotation } from './logRotation.js';

describe('copy-truncate log rotation', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'kts-rotate-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('given a log under the limit, when checked, then it is left alone and no .1 appears', async () => {
    const log = path.join(dir, 'container.log');
    writeFileSync(log, 'short\n');
    expect(await rotateIfOver(log, 1024)).toBe(false);
    expect(readFileSync(log, 'utf8')).toBe('short\n');
    expect(existsSync(rotatedPath(log))).toBe(false);
  });

  it('given a log over the limit, when rotated, then .1 holds its last max bytes (0600) and the log is empty', async () => {
    const log = path.join(dir, 'container.log');
    const lines = Array.from({ length: 1000 }, (_, i) => `line ${String(i).padStart(4, '0')}\n`).join('');
    writeFileSync(log, lines);
    expect(await rotateIfOver(log, 100)).toBe(true);
    expect(statSync(log).size).toBe(0);
    expect(readFileSync(rotatedPath(log), 'utf8')).toBe(lines.slice(-100));
    expect(statSync(rotatedPath(log)).mode & 0o777).toBe(0o600);
  });

  it('given a writer holding the log O_APPEND, when it is rotated, then the writer goes on at the start of the emptied file', async () => {
    const log = path.join(dir, 'container.log');
    const fd = openSync(log, constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND);
    try {
      writeSync(fd, 'x'.repeat(5000));
      await rotateIfOver(log, 1000);
      writeSync(fd, 'after rotation\n');
      expect(readFileSync(log, 'utf8')).toBe('after rotation\n');
    } finally {
      closeSync(fd);
    }
  });

  it('given a second rotation, then .1 is replaced, never appended to', async () => {
    const log = path.join(dir, 'container.log');
    writeFileSync(log, 'a'.repeat(300));
    await rotateIfOver(log, 100);
    writeFileSync(log, 'b'.repeat(300));
    await rotateIfOver(log, 100);
    expect(readFileSync(rotatedPath(log), 'utf8')).toBe('b'.repeat(100));
  });

  it('given the log is a symlink to another file, then nothing is read, written or truncated through it', async () => {
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'v'.repeat(5000));
    const log = path.join(dir, 'container.log');
    symlinkSync(victim, log);
    // A limit below the link's own size gets past the cheap lstat look to the O_NOFOLLOW open.
    await expect(rotateIfOver(log, 10)).rejects.toMatchObject({ code: 'ELOOP' });
    expect(await rotateIfOver(log, 100)).toBe(false);
    expect(statSync(victim).size).toBe(5000);
    expect(existsSync(rotatedPath(log))).toBe(false);
  });

  it('given .1 is a symlink planted to another file, then rotation replaces the link and leaves the target alone', async () => {
    const victim = path.join(dir, 'victim');
    writeFileSync(victim, 'keep');
    const log = path.join(dir, 'container.log');
    writeFileSync(log, 'z'.repeat(500));
    symlinkSync(victim, rotatedPath(log));
    await rotateIfOver(log, 100);
    expect(readFileSync(victim, 'utf8')).toBe('keep');
    expect(readFileSync(rotatedPath(log), 'utf8')).toBe('z'.repeat(100));
  });

  it('given a FIFO or a missing file, then it neither blocks nor fails', async () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(await rotateIfOver(fifo, 10)).toBe(false);
    expect(await rotateIfOver(path.join(dir, 'gone.log'), 10)).toBe(false);
  });

  it('given a periodic rotation, then a log growing past the limit is rotated without being asked', async () => {
    const log = path.join(dir, 'container.log');
    writeFileSync(log, 'q'.repeat(4096));
    const errors: unknown[] = [];
    const rotation = startLogRotation({ intervalMs: 20, maxBytes: 1024, files: () => [log], onError: (_file, error) => errors.push(error) });
    try {
      const deadline = Date.now() + 2000;
      while (statSync(log).size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(statSync(log).size).toBe(0);
      expect(statSync(rotatedPath(log)).size).toBe(1024);
      expect(errors).toEqual([]);
    } finally {
      rotation.stop();
    }
  });
});
