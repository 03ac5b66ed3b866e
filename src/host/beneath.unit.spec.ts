// kts-beneath and openBeneath against a temporary tree in which a hostile party planted symlinks, FIFOs
// and renames: each operation refuses to leave the root, and a FIFO never blocks.
import { execFileSync } from 'node:child_process';
import { constants, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BeneathBatch, beneathBinary, openBeneath } from './beneath.js';

const helper = beneathBinary();
const skip = process.getuid?.() !== 0 ? 'needs root (it mounts)' : !existsSync(helper) ? `needs ${helper} (bash scripts/build-native.sh)` : undefined;

const mountedUnder = (dir: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((line) => line.split(' ')[4] ?? '').filter((point) => point.startsWith(dir));

/** Fails the test instead of hanging it when an operation blocks (on a FIFO). */
const withinSeconds = <T>(promise: Promise<T>, seconds = 5) =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('blocked')), seconds * 1000).unref())]);

describe.skipIf(skip)(`operations beneath a hostile root${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let work: string;
  let root: string;
  let host: string;
  const batch = () => new BeneathBatch(root);

  beforeEach(() => {
    work = mkdtempSync(path.join(tmpdir(), 'kts-beneath-'));
    root = path.join(work, 'root');
    host = path.join(work, 'host');
    mkdirSync(root);
    mkdirSync(host);
    writeFileSync(path.join(host, 'victim'), 'precious');
    symlinkSync(host, path.join(root, 'evil'));
  });
  afterEach(() => {
    for (const point of mountedUnder(work).reverse()) execFileSync('umount', ['-l', point]);
    rmSync(work, { recursive: true, force: true });
  });

  it('makes directories and writes files beneath the root', async () => {
    await batch().mkdir('c/one/rootfs').write('c/one/config.json', '{"a":1}').file('c/one/stdout').run();
    expect(readFileSync(path.join(root, 'c/one/config.json'), 'utf8')).toBe('{"a":1}');
    expect(statSync(path.join(root, 'c/one/stdout')).size).toBe(0);
    expect(statSync(path.join(root, 'c/one/rootfs')).isDirectory()).toBe(true);
  });

  it('refuses a symlinked component, a final symlink, "..", and an absolute path; the host is untouched', async () => {
    symlinkSync(path.join(host, 'victim'), path.join(root, 'stdout'));
    for (const hostile of [batch().mkdir('evil/sub'), batch().file('evil/new'), batch().file('stdout'), batch().write('stdout', 'x'), batch().file('../escaped'), batch().mkdir('/tmp/abs')]) {
      await expect(hostile.run()).rejects.toThrow(/refused beneath/);
    }
    expect(readdirSync(host)).toEqual(['victim']);
    expect(readFileSync(path.join(host, 'victim'), 'utf8')).toBe('precious');
    expect(existsSync(path.join(work, 'escaped'))).toBe(false);
  });

  it('stops at the first refusal: later operations of the batch do not run', async () => {
    await expect(batch().mkdir('evil/x').mkdir('after').run()).rejects.toThrow(/evil\/x/);
    expect(existsSync(path.join(root, 'after'))).toBe(false);
  });

  it('refuses a FIFO where a file should be, without blocking on it', async () => {
    execFileSync('mkfifo', [path.join(root, 'stdout')]);
    await expect(withinSeconds(batch().file('stdout').run())).rejects.toThrow(/refused beneath/);
    await expect(withinSeconds(openBeneath(root, 'stdout', constants.O_RDONLY))).rejects.toThrow(/not a regular file/);
  });

  it('binds read-only from the start: the target cannot be written, the source stays writable', async () => {
    const source = path.join(work, 'data');
    mkdirSync(source);
    await batch().mkdir('m/ro').mkdir('m/rw').bind(source, 'm/ro', true).bind(source, 'm/rw').run();
    expect(() => writeFileSync(path.join(root, 'm/ro/x'), 'no')).toThrow(/EROFS/);
    writeFileSync(path.join(root, 'm/rw/y'), 'yes');
    expect(readFileSync(path.join(source, 'y'), 'utf8')).toBe('yes');
    expect(mountedUnder(root)).toHaveLength(2);
  });

  it('refuses to bind onto a symlink: nothing is mounted on the host directory', async () => {
    await expect(batch().bind(path.join(work, 'root'), 'evil').run()).rejects.toThrow(/refused beneath/);
    expect(mountedUnder(host)).toEqual([]);
  });

  it('pins a directory: it cannot be renamed away, and one detach takes all mounted beneath it', async () => {
    const source = path.join(work, 'data');
    mkdirSync(source);
    await batch().mkdir('c/one').pin('c/one').mkdir('c/one/rootfs').bind(source, 'c/one/rootfs').run();
    expect(() => renameSync(path.join(root, 'c/one'), path.join(root, 'c/moved'))).toThrow(/EBUSY/);
    await batch().detach('c/one').run();
    expect(mountedUnder(root)).toEqual([]);
    await batch().detach('c/one').detach('c/none').run();
  });

  it('removes a tree without following a symlink in it', async () => {
    await batch().mkdir('c/one/exec').run();
    symlinkSync(host, path.join(root, 'c/one/exec/link'));
    await batch().rmtree('c').rmtree('c').run();
    expect(existsSync(path.join(root, 'c'))).toBe(false);
    expect(readdirSync(host)).toEqual(['victim']);
    // A link planted where a container's directory was: detaching and removing it touch only the link.
    await batch().detach('evil').detach('evil/sub').rmtree('evil/sub').rmtree('evil').run();
    expect(existsSync(path.join(root, 'evil'))).toBe(false);
    expect(readdirSync(host)).toEqual(['victim']);
  });

  it('refuses to remove a tree that still has a mount in it, and leaves the mounted host directory alone', async () => {
    await batch().mkdir('c/m').bind(host, 'c/m').run();
    await expect(batch().rmtree('c').run()).rejects.toThrow(/refused beneath/);
    expect(readFileSync(path.join(host, 'victim'), 'utf8')).toBe('precious');
  });

  it('punches out what was forwarded: the disk blocks go, the size and the later bytes stay', async () => {
    writeFileSync(path.join(root, 'out'), Buffer.alloc(4 * 1024 * 1024, 'a'));
    await batch().punch('out', 3 * 1024 * 1024).run();
    const info = statSync(path.join(root, 'out'));
    expect(info.size).toBe(4 * 1024 * 1024);
    expect(info.blocks * 512).toBeLessThanOrEqual(1024 * 1024 + 64 * 1024);
    expect(readFileSync(path.join(root, 'out')).subarray(-1).toString()).toBe('a');
  });

  it('openBeneath reads a regular file, and refuses a symlinked directory or a symlink at the end', async () => {
    await batch().mkdir('c/one').write('c/one/stdout', 'out').run();
    const file = await openBeneath(root, 'c/one/stdout', constants.O_RDONLY);
    expect((await file.readFile()).toString()).toBe('out');
    await file.close();
    await expect(openBeneath(root, 'evil/victim', constants.O_RDONLY)).rejects.toThrow(/ENOTDIR|ELOOP/);
    symlinkSync(path.join(host, 'victim'), path.join(root, 'c/one/stderr'));
    await expect(openBeneath(root, 'c/one/stderr', constants.O_RDONLY)).rejects.toThrow(/ELOOP/);
    await expect(openBeneath(root, '../host/victim', constants.O_RDONLY)).rejects.toThrow(/not a path beneath/);
  });

  it('openBeneath refuses a path whose directory the guest swapped for a symlink after the daemon made it', async () => {
    await batch().mkdir('c/one').write('c/one/stdout', 'mine').run();
    renameSync(path.join(root, 'c'), path.join(root, 'old'));
    symlinkSync(host, path.join(root, 'c'));
    await expect(openBeneath(root, 'c/one/stdout', constants.O_RDONLY)).rejects.toThrow(/ENOTDIR|ELOOP/);
  });
});
