import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKtsError } from '../core/errors.js';
import { parseImageRef } from './imageRef.js';
import { ImageStore, type ImageStoreOptions } from './imageStore.js';
import { defaultUnpackBinary } from './layerUnpacker.js';
import { dir, file, writeLayout } from './ociTestLayout.testkit.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const buildScript = path.join(repoRoot, 'scripts/build-images.sh');

let workDir: string;
let imagesDir: string;

beforeAll(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'kts-images-'));
  imagesDir = path.join(workDir, 'images');
  execFileSync('bash', [buildScript, imagesDir], { stdio: 'pipe' });
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Why the specs that really unpack cannot run here: kts-unpack chroots and keeps owners, so it needs root. */
const unpackSkipReason = process.getuid?.() !== 0 ? 'needs root (kts-unpack chroots into the rootfs)'
  : !existsSync(defaultUnpackBinary()) ? 'needs dist/native/kts-unpack: run "bash scripts/build-native.sh"' : undefined;

const DEFAULT_LIMITS = { maxLayerBytes: 8 * 1024 ** 3, maxLayerEntries: 1_000_000 };

function storeOf(options: Pick<ImageStoreOptions, 'imagesDir' | 'cacheDir'> & Partial<ImageStoreOptions>): ImageStore {
  return new ImageStore({ ...DEFAULT_LIMITS, ...options });
}

async function errorOf(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

describe('build-images.sh', () => {
  it('builds the same digest twice and skips a layout that is up to date', async () => {
    const index = await readFile(path.join(imagesDir, 'busybox/index.json'), 'utf8');
    const again = execFileSync('bash', [buildScript, imagesDir], { encoding: 'utf8' });
    expect(again).toContain('up to date');
    const otherDir = path.join(workDir, 'images-again');
    execFileSync('bash', [buildScript, otherDir], { stdio: 'pipe' });
    expect(await readFile(path.join(otherDir, 'busybox/index.json'), 'utf8')).toBe(index);
    expect(JSON.parse(index).manifests[0].annotations).toMatchObject({ 'org.opencontainers.image.ref.name': 'latest', 'io.kts.image.name': 'busybox' });
  });
});

describe('ImageStore with the busybox layout', () => {
  it.skipIf(unpackSkipReason !== undefined)('resolves busybox by short name, name:tag and full registry reference to one unpacked rootfs', async () => {
    const store = storeOf({ imagesDir, cacheDir: path.join(workDir, 'cache-refs') });
    const short = await store.resolve('busybox');
    const tagged = await store.resolve('busybox:latest');
    const full = await store.resolve('docker.io/library/busybox:latest');
    expect(short).toEqual(tagged);
    expect(full).toEqual(tagged);
    expect(short).toMatchObject({ name: 'busybox', tag: 'latest', config: { cmd: ['sh'], entrypoint: [], workingDir: '/' } });
    expect(short.manifestDigest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(short.config.env).toContainEqual(expect.stringMatching(/^PATH=/));
    expect(short.config.user).toBeUndefined();
    expect(short.rootfsDir).toBe(path.join(workDir, 'cache-refs', short.manifestDigest.slice(7), 'rootfs'));
    expect(await readlink(path.join(short.rootfsDir, 'bin/sh'))).toBe('busybox');
    expect((await stat(path.join(short.rootfsDir, 'bin/busybox'))).mode & 0o111).not.toBe(0);
    expect((await stat(path.join(short.rootfsDir, 'tmp'))).mode & 0o7777).toBe(0o1777);
    expect(await readFile(path.join(short.rootfsDir, 'etc/passwd'), 'utf8')).toMatch(/^root:x:0:0:/);
    for (const dir of ['proc', 'dev', 'sys']) expect((await stat(path.join(short.rootfsDir, dir))).isDirectory()).toBe(true);
  });

  it.skipIf(unpackSkipReason !== undefined)('unpacks once: a second resolve (also from a new store) reuses the cached rootfs', async () => {
    const cacheDir = path.join(workDir, 'cache-reuse');
    const first = await storeOf({ imagesDir, cacheDir }).resolve('busybox');
    const marker = path.join(first.rootfsDir, 'tmp/marker');
    await writeFile(marker, 'still here');
    const inode = (await stat(first.rootfsDir)).ino;
    const second = await storeOf({ imagesDir, cacheDir }).resolve('busybox:latest');
    expect(second.rootfsDir).toBe(first.rootfsDir);
    expect((await stat(second.rootfsDir)).ino).toBe(inode);
    expect(await readFile(marker, 'utf8')).toBe('still here');
    expect((await readdir(cacheDir)).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
  });

  it.skipIf(unpackSkipReason !== undefined)('unpacks concurrent resolves of one image once', async () => {
    const store = storeOf({ imagesDir, cacheDir: path.join(workDir, 'cache-concurrent') });
    const [a, b] = await Promise.all([store.resolve('busybox'), store.resolve('busybox:latest')]);
    expect(a.rootfsDir).toBe(b.rootfsDir);
    expect(await readdir(path.join(workDir, 'cache-concurrent'))).toEqual([a.manifestDigest.slice(7)]);
  });

  it('lists the images of the layouts', async () => {
    const store = storeOf({ imagesDir, cacheDir: path.join(workDir, 'cache-list') });
    const images = await store.list();
    expect(images).toEqual([{ name: 'busybox', tag: 'latest', manifestDigest: expect.stringMatching(/^sha256:/) }]);
    expect(await storeOf({ imagesDir: path.join(workDir, 'nowhere'), cacheDir: workDir }).list()).toEqual([]);
  });

  it('says which images exist when a reference is unknown', async () => {
    const store = storeOf({ imagesDir, cacheDir: path.join(workDir, 'cache-unknown') });
    for (const ref of ['alpine', 'busybox:1.36', 'quay.io/someone/busybox']) {
      const error = await errorOf(store.resolve(ref));
      expect(isKtsError(error, 'not_found')).toBe(true);
      expect(error.message).toBe(`image "${ref}" not found in ${imagesDir}; available: busybox:latest`);
    }
  });

  it('rejects malformed references as invalid arguments', async () => {
    const store = storeOf({ imagesDir, cacheDir: path.join(workDir, 'cache-bad-ref') });
    for (const ref of ['', 'BusyBox', '../busybox', 'busybox:', 'busybox@sha256:abc', 'a/../b']) {
      expect(isKtsError(await errorOf(store.resolve(ref)), 'invalid_argument')).toBe(true);
    }
  });

  it('refuses a corrupted layer blob and leaves no rootfs behind', async () => {
    const copyDir = path.join(workDir, 'images-corrupt');
    await cp(imagesDir, copyDir, { recursive: true });
    const blobsDir = path.join(copyDir, 'busybox/blobs/sha256');
    const largest = await largestFile(blobsDir);
    const bytes = await readFile(largest);
    bytes[bytes.length >> 1] ^= 0xff;
    await writeFile(largest, bytes);
    const cacheDir = path.join(workDir, 'cache-corrupt');
    const error = await errorOf(storeOf({ imagesDir: copyDir, cacheDir }).resolve('busybox'));
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error.message).toContain(`blob sha256:${path.basename(largest)} is corrupt`);
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('refuses a corrupted config blob', async () => {
    const copyDir = path.join(workDir, 'images-corrupt-config');
    await cp(imagesDir, copyDir, { recursive: true });
    const manifest = await readBlobJson(copyDir, JSON.parse(await readFile(path.join(copyDir, 'busybox/index.json'), 'utf8')).manifests[0].digest);
    const configPath = path.join(copyDir, 'busybox/blobs/sha256', manifest.config.digest.slice(7));
    await writeFile(configPath, (await readFile(configPath, 'utf8')).replace('"sh"', '"xx"'));
    const error = await errorOf(storeOf({ imagesDir: copyDir, cacheDir: path.join(workDir, 'cache-cc') }).resolve('busybox'));
    expect(error.message).toMatch(/blob sha256:[a-f0-9]{64} is corrupt/);
  });
});

// Hostile layers, whiteouts and caps of the extractor: test/imageEscape.integration.spec.ts.
describe('ImageStore with hand-made layers', () => {
  it('checks diff_ids against the uncompressed layer before anything is unpacked', async () => {
    const layoutsDir = path.join(workDir, 'layouts-diffid');
    await writeLayout(layoutsDir, 'wrongdiff', [[dir('etc'), file('etc/a', 'x')]], { diffIds: [`sha256:${'0'.repeat(64)}`] });
    const cacheDir = path.join(layoutsDir, 'cache');
    const error = await errorOf(storeOf({ imagesDir: layoutsDir, cacheDir, unpackBinary: '/nonexistent/kts-unpack' }).resolve('wrongdiff'));
    expect(error.message).toContain("the config's diff_id says sha256:000");
    expect(await readdir(cacheDir)).toEqual([]);
  });

  it('stops hashing a layer at max_layer_bytes', async () => {
    const layoutsDir = path.join(workDir, 'layouts-bytes');
    await writeLayout(layoutsDir, 'big', [[file('zeros', Buffer.alloc(4 << 20))]]);
    const store = storeOf({ imagesDir: layoutsDir, cacheDir: path.join(layoutsDir, 'cache'), maxLayerBytes: 1 << 20, unpackBinary: '/nonexistent/kts-unpack' });
    const error = await errorOf(store.resolve('big'));
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error.message).toMatch(/layer 0 \(sha256:[a-f0-9]{64}\): the layer decompresses to more than max_layer_bytes \(1048576\) bytes/);
  });
});

describe('parseImageRef', () => {
  it.each([
    ['busybox', 'busybox', 'latest'],
    ['busybox:1.36', 'busybox', '1.36'],
    ['docker.io/library/busybox:latest', 'busybox', 'latest'],
    ['docker.io/busybox', 'busybox', 'latest'],
    ['localhost:5000/busybox:v1', 'busybox', 'v1'],
    ['quay.io/org/app', 'org/app', 'latest'],
  ])('%s → %s:%s', (ref, name, tag) => {
    expect(parseImageRef(ref)).toEqual({ name, tag });
  });
});

// --- helpers ----------------------------------------------------------------------------------

async function readBlobJson(layoutsDir: string, digest: string) {
  return JSON.parse(await readFile(path.join(layoutsDir, 'busybox/blobs/sha256', digest.slice(7)), 'utf8'));
}

async function largestFile(dirPath: string): Promise<string> {
  const names = await readdir(dirPath);
  const sized = await Promise.all(names.map(async (name) => ({ name, size: (await stat(path.join(dirPath, name))).size })));
  return path.join(dirPath, sized.sort((a, b) => b.size - a.size)[0]!.name);
}
