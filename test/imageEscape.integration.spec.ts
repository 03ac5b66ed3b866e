// Probes of issue 12 (findings 2 and 10): a hostile image must not write outside its rootfs while it
// is unpacked, whatever its tar headers say, and a layer that decompresses to too much or holds too
// many entries is refused. Each hostile case checks a host canary directory is untouched.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isKtsError } from '../src/core/errors.js';
import { ImageStore, type ImageStoreOptions } from '../src/images/imageStore.js';
import {
  blockDevice, charDevice, dir, fifo, file, gnuLongName, hardlink, paxHeader, symlink, tarOf, writeLayout, type TarMember,
} from '../src/images/ociTestLayout.testkit.js';
import { REPO } from './helpers/daemon.js';

const UNPACK_BINARY = path.join(REPO, 'dist/native/kts-unpack');
const skipReason = process.getuid?.() !== 0
  ? 'needs root (the unpacker chroots into the rootfs and keeps numeric owners)'
  : !existsSync(UNPACK_BINARY) ? 'needs dist/native/kts-unpack: run "bash scripts/build-native.sh"' : undefined;

let workDir: string;
/** Stands for any host directory an image must not reach; `victim` is a file in it. */
let hostDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'kts-escape-'));
  hostDir = path.join(workDir, 'host');
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

beforeEach(async () => {
  await rm(hostDir, { recursive: true, force: true });
  await mkdir(hostDir);
  await writeFile(path.join(hostDir, 'victim'), 'original');
});

async function expectHostUntouched(): Promise<void> {
  expect(await readdir(hostDir)).toEqual(['victim']);
  expect(await readFile(path.join(hostDir, 'victim'), 'utf8')).toBe('original');
  expect((await stat(path.join(hostDir, 'victim'))).nlink).toBe(1);
}

interface Outcome { rootfsDir?: string; error?: Error; cacheDir: string }

let caseCount = 0;
async function unpack(layers: Array<TarMember[] | Buffer>, options: Partial<ImageStoreOptions> = {}): Promise<Outcome> {
  const caseDir = path.join(workDir, `case-${++caseCount}`);
  await writeLayout(path.join(caseDir, 'images'), 'probe', layers);
  const cacheDir = path.join(caseDir, 'cache');
  const store = new ImageStore({ imagesDir: path.join(caseDir, 'images'), cacheDir, maxLayerBytes: 8 * 1024 ** 3, maxLayerEntries: 1_000_000, ...options });
  try {
    return { rootfsDir: (await store.resolve('probe')).rootfsDir, cacheDir };
  } catch (error) {
    return { error: error as Error, cacheDir };
  }
}

function inside(rootfsDir: string, hostPath: string): string {
  return path.join(rootfsDir, hostPath);
}

describe.skipIf(skipReason !== undefined)('a hostile image stays beneath its rootfs', () => {
  it('(A) a hardlink to a symlink of a lower layer, then a file below the hardlink', async () => {
    // The rootfs has a directory at the host directory's path: the kernel resolves the link to it.
    const { rootfsDir, error } = await unpack([[dir(hostDir.slice(1)), symlink('s', hostDir)], [hardlink('d', 's'), file('d/victim', 'pwned')]]);
    await expectHostUntouched();
    expect(error).toBeUndefined();
    expect(await readFile(inside(rootfsDir!, `${hostDir}/victim`), 'utf8')).toBe('pwned');
  });

  it('(B) a pax GNU.sparse.name naming a path below a symlink of a lower layer', async () => {
    const { rootfsDir, error } = await unpack([[symlink('s', hostDir)], [paxHeader({ 'GNU.sparse.name': 's/victim' }), file('harmless', 'pwned')]]);
    await expectHostUntouched();
    expect(error).toBeUndefined();
    const landed = [inside(rootfsDir!, `${hostDir}/victim`), path.join(rootfsDir!, 'harmless')].filter((candidate) => existsSync(candidate));
    expect(landed).toHaveLength(1);
  });

  it('(C) a pax path and a GNU long name that disagree', async () => {
    const { rootfsDir, error } = await unpack([[symlink('s', hostDir)], [paxHeader({ path: 's/victim' }), gnuLongName('harmless'), file('harmless', 'pwned')]]);
    await expectHostUntouched();
    expect(error).toBeUndefined();
    const landed = [inside(rootfsDir!, `${hostDir}/victim`), path.join(rootfsDir!, 'harmless')].filter((candidate) => existsSync(candidate));
    expect(landed).toHaveLength(1);
  });

  it('a symlink chain a -> b -> host directory, written through in a later layer', async () => {
    // Nothing at that path inside the rootfs: the link dangles there, and the layer is refused.
    const { error, cacheDir } = await unpack([[symlink('a', 'b'), symlink('b', hostDir)], [file('a/victim', 'pwned')]]);
    await expectHostUntouched();
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error!.message).toMatch(/entry "a\/victim": .*No such file or directory/);
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('an absolute symlink and a write below it in the same layer', async () => {
    const { rootfsDir, error } = await unpack([[dir(hostDir.slice(1)), symlink('abs', hostDir), file('abs/victim', 'pwned'), file('abs/new', 'pwned')]]);
    await expectHostUntouched();
    expect(error).toBeUndefined();
    expect(await readdir(inside(rootfsDir!, hostDir))).toEqual(['new', 'victim']);
  });

  it('a whiteout below a symlink to the host removes nothing there', async () => {
    const { error } = await unpack([[symlink('s', hostDir)], [file('s/.wh.victim', ''), file('s/.wh..wh..opq', '')]]);
    await expectHostUntouched();
    expect(error).toBeUndefined();
  });

  it.each([
    ['a ".." name', ''],
    ['a ".." name inside a directory', 'a/'],
  ])('refuses %s', async (_what, prefix) => {
    // Deep enough to climb from the rootfs to / (the kernel stops ".." at /).
    const name = `${prefix}${'../'.repeat(10)}${hostDir.slice(1)}/victim`;
    const { error, cacheDir } = await unpack([[dir('a'), file(name, 'pwned')]]);
    await expectHostUntouched();
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error!.message).toMatch(/".*" has a "\.\." component/);
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('refuses a hardlink whose target climbs out with ".."', async () => {
    const passwdBefore = await stat('/etc/passwd');
    const { error } = await unpack([[hardlink('stolen', `${'../'.repeat(10)}etc/passwd`)]]);
    expect(error?.message).toMatch(/has a "\.\." component/);
    expect((await stat('/etc/passwd')).nlink).toBe(passwdBefore.nlink);
  });

  it('resolves an absolute hardlink target inside the rootfs', async () => {
    const passwdBefore = await stat('/etc/passwd');
    const { rootfsDir, error } = await unpack([[dir('etc'), file('etc/passwd', 'root:x:0:0::/:/bin/sh\n'), hardlink('stolen', '/etc/passwd')]]);
    expect(error).toBeUndefined();
    expect((await stat('/etc/passwd')).nlink).toBe(passwdBefore.nlink);
    expect((await stat(path.join(rootfsDir!, 'stolen'))).ino).toBe((await stat(path.join(rootfsDir!, 'etc/passwd'))).ino);
    const hostTarget = await unpack([[hardlink('stolen', `${hostDir}/victim`)]]);
    expect(hostTarget.error?.message).toMatch(/stolen/);
    await expectHostUntouched();
  });

  it('creates no device nodes (and unpacks the rest of the layer)', async () => {
    const { rootfsDir, error } = await unpack([[dir('dev'), charDevice('dev/mem', 1, 1), blockDevice('dev/sda', 8, 0), fifo('dev/pipe'), file('after', 'ok')]]);
    expect(error).toBeUndefined();
    await expect(lstat(path.join(rootfsDir!, 'dev/mem'))).rejects.toThrow(/ENOENT/);
    await expect(lstat(path.join(rootfsDir!, 'dev/sda'))).rejects.toThrow(/ENOENT/);
    expect((await lstat(path.join(rootfsDir!, 'dev/pipe'))).isFIFO()).toBe(true);
    expect(await readFile(path.join(rootfsDir!, 'after'), 'utf8')).toBe('ok');
  });

  it('keeps setuid and setgid bits and numeric owners', async () => {
    const { rootfsDir, error } = await unpack([[dir('bin'), file('bin/su', 'x', { mode: 0o4755 }), file('bin/wall', 'y', { mode: 0o2755, uid: 1234, gid: 5678 })]]);
    expect(error).toBeUndefined();
    const su = await stat(path.join(rootfsDir!, 'bin/su'));
    const wall = await stat(path.join(rootfsDir!, 'bin/wall'));
    expect([su.mode & 0o7777, su.uid, su.gid]).toEqual([0o4755, 0, 0]);
    expect([wall.mode & 0o7777, wall.uid, wall.gid]).toEqual([0o2755, 1234, 5678]);
  });
});

describe.skipIf(skipReason !== undefined)('what an image may legitimately carry still unpacks', () => {
  it('whiteouts and an opaque directory hide lower layers only', async () => {
    const { rootfsDir, error } = await unpack([
      [dir('etc'), file('etc/keep', 'lower'), file('etc/gone', 'x'), dir('opt'), file('opt/old', 'x'), dir('opt/sub'), file('opt/sub/deep', 'x')],
      [file('opt/new', 'upper'), file('etc/.wh.gone', ''), file('opt/.wh..wh..opq', ''), file('etc/keep', 'upper')],
    ]);
    expect(error).toBeUndefined();
    expect(await readFile(path.join(rootfsDir!, 'etc/keep'), 'utf8')).toBe('upper');
    expect(await readdir(path.join(rootfsDir!, 'etc'))).toEqual(['keep']);
    expect(await readdir(path.join(rootfsDir!, 'opt'))).toEqual(['new']);
  });

  it('hardlinks inside the layer share one inode', async () => {
    const { rootfsDir, error } = await unpack([[dir('bin'), file('bin/busybox', 'elf', { mode: 0o755 }), hardlink('bin/sh', 'bin/busybox'), hardlink('bin/ls', './bin/busybox')]]);
    expect(error).toBeUndefined();
    const inode = (await stat(path.join(rootfsDir!, 'bin/busybox'))).ino;
    expect((await stat(path.join(rootfsDir!, 'bin/sh'))).ino).toBe(inode);
    expect((await stat(path.join(rootfsDir!, 'bin/ls'))).ino).toBe(inode);
    // The archive's directory mtime (0) survives the files written into it afterwards.
    expect((await stat(path.join(rootfsDir!, 'bin'))).mtimeMs).toBe(0);
  });

  it('a relative symlink that stays inside, also written through by a later layer (usrmerge /lib -> usr/lib)', async () => {
    const { rootfsDir, error } = await unpack([[dir('usr'), dir('usr/lib'), file('usr/lib/libc.so', 'c'), symlink('lib', 'usr/lib')], [file('lib/libm.so', 'm')]]);
    expect(error).toBeUndefined();
    expect(await readlink(path.join(rootfsDir!, 'lib'))).toBe('usr/lib');
    expect(await readFile(path.join(rootfsDir!, 'usr/lib/libm.so'), 'utf8')).toBe('m');
  });

  it('under the daemon\'s umask 077, the rootfs and the directories a layer only implies are 0755', async () => {
    const previous = process.umask(0o077);
    try {
      const { rootfsDir, error } = await unpack([[file('usr/share/doc/readme', 'hi')]]);
      expect(error).toBeUndefined();
      for (const sub of ['', 'usr', 'usr/share/doc']) expect((await stat(path.join(rootfsDir!, sub))).mode & 0o777).toBe(0o755);
    } finally {
      process.umask(previous);
    }
  });

  it('a later layer replaces a lower directory with a symlink, and a lower symlink with a directory', async () => {
    const { rootfsDir, error } = await unpack([
      [dir('lib'), file('lib/old.so', 'x'), dir('usr'), dir('usr/lib'), symlink('etc', 'usr/lib')],
      [symlink('lib', 'usr/lib'), dir('etc'), file('etc/hostname', 'box')],
    ]);
    expect(error).toBeUndefined();
    expect(await readlink(path.join(rootfsDir!, 'lib'))).toBe('usr/lib');
    expect((await lstat(path.join(rootfsDir!, 'etc'))).isDirectory()).toBe(true);
    expect(await readdir(path.join(rootfsDir!, 'usr/lib'))).toEqual([]);
  });
});

describe.skipIf(skipReason !== undefined)('layer caps', () => {
  const caps = { maxLayerBytes: 1 << 20, maxLayerEntries: 1000 };

  it('refuses a gzip bomb naming max_layer_bytes and registers nothing', async () => {
    const bomb = tarOf([file('zeros', Buffer.alloc(64 << 20))]);
    expect(gzipSync(bomb).length).toBeLessThan(128 << 10);
    const { error, cacheDir } = await unpack([bomb], caps);
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error!.message).toMatch(/max_layer_bytes \(1048576\)/);
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('refuses a layer of too many entries naming max_layer_entries and registers nothing', async () => {
    const many = Array.from({ length: 1001 }, (_, i) => file(`f${i}`, ''));
    const { error, cacheDir } = await unpack([many], caps);
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error!.message).toMatch(/max_layer_entries \(1000\)/);
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('unpacks a layer just under both caps', async () => {
    const layer = Array.from({ length: 999 }, (_, i) => file(`f${i}`, 'x'));
    const { rootfsDir, error } = await unpack([layer], caps);
    expect(error).toBeUndefined();
    expect(await readdir(rootfsDir!)).toHaveLength(999);
  });
});

describe.skipIf(skipReason !== undefined)('kts-unpack on its own', () => {
  async function runHelper(tar: Buffer, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; rootfs: string }> {
    const caseDir = await mkdtemp(path.join(workDir, 'helper-'));
    const rootfs = path.join(caseDir, 'rootfs');
    await mkdir(rootfs);
    await writeFile(path.join(caseDir, 'layer.tar.gz'), gzipSync(tar));
    const result = spawnSync(UNPACK_BINARY, ['--input', path.join(caseDir, 'layer.tar.gz'), '--gzip', '--rootfs', rootfs, ...args], { encoding: 'utf8' });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr, rootfs };
  }

  it('reports entries, bytes and skipped devices as one line of JSON', async () => {
    const tar = tarOf([dir('dev'), charDevice('dev/null', 1, 3), file('hello', 'hi')]);
    const { status, stdout, stderr } = await runHelper(tar, ['--max-bytes', '1000000', '--max-entries', '10']);
    expect(stderr).toBe('');
    expect(status).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ entries: 3, bytes: tar.length, skippedDevices: 1 });
  });

  it('stops a gzip bomb at its byte cap without writing it out', async () => {
    const { status, stderr, rootfs } = await runHelper(tarOf([file('zeros', Buffer.alloc(64 << 20))]), ['--max-bytes', String(1 << 20), '--max-entries', '10']);
    expect(status).not.toBe(0);
    expect(stderr.trim()).toMatch(/^kts-unpack: .*max_layer_bytes \(1048576\)/);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    const written = await stat(path.join(rootfs, 'zeros')).then((stats) => stats.size, () => 0);
    expect(written).toBeLessThanOrEqual(1 << 20);
  });
});
