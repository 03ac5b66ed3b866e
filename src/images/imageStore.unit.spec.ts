import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKtsError } from '../core/errors.js';
import { parseImageRef } from './imageRef.js';
import { ImageStore } from './imageStore.js';

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
  it('resolves busybox by short name, name:tag and full registry reference to one unpacked rootfs', async () => {
    const store = new ImageStore({ imagesDir, cacheDir: path.join(workDir, 'cache-refs') });
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

  it('unpacks once: a second resolve (also from a new store) reuses the cached rootfs', async () => {
    const cacheDir = path.join(workDir, 'cache-reuse');
    const first = await new ImageStore({ imagesDir, cacheDir }).resolve('busybox');
    const marker = path.join(first.rootfsDir, 'tmp/marker');
    await writeFile(marker, 'still here');
    const inode = (await stat(first.rootfsDir)).ino;
    const second = await new ImageStore({ imagesDir, cacheDir }).resolve('busybox:latest');
    expect(second.rootfsDir).toBe(first.rootfsDir);
    expect((await stat(second.rootfsDir)).ino).toBe(inode);
    expect(await readFile(marker, 'utf8')).toBe('still here');
    expect((await readdir(cacheDir)).filter((name) => name.startsWith('.tmp-'))).toEqual([]);
  });

  it('unpacks concurrent resolves of one image once', async () => {
    const store = new ImageStore({ imagesDir, cacheDir: path.join(workDir, 'cache-concurrent') });
    const [a, b] = await Promise.all([store.resolve('busybox'), store.resolve('busybox:latest')]);
    expect(a.rootfsDir).toBe(b.rootfsDir);
    expect(await readdir(path.join(workDir, 'cache-concurrent'))).toEqual([a.manifestDigest.slice(7)]);
  });

  it('lists the images of the layouts', async () => {
    const store = new ImageStore({ imagesDir, cacheDir: path.join(workDir, 'cache-list') });
    const images = await store.list();
    expect(images).toEqual([{ name: 'busybox', tag: 'latest', manifestDigest: expect.stringMatching(/^sha256:/) }]);
    expect(await new ImageStore({ imagesDir: path.join(workDir, 'nowhere'), cacheDir: workDir }).list()).toEqual([]);
  });

  it('says which images exist when a reference is unknown', async () => {
    const store = new ImageStore({ imagesDir, cacheDir: path.join(workDir, 'cache-unknown') });
    for (const ref of ['alpine', 'busybox:1.36', 'quay.io/someone/busybox']) {
      const error = await errorOf(store.resolve(ref));
      expect(isKtsError(error, 'not_found')).toBe(true);
      expect(error.message).toBe(`image "${ref}" not found in ${imagesDir}; available: busybox:latest`);
    }
  });

  it('rejects malformed references as invalid arguments', async () => {
    const store = new ImageStore({ imagesDir, cacheDir: path.join(workDir, 'cache-bad-ref') });
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
    const error = await errorOf(new ImageStore({ imagesDir: copyDir, cacheDir }).resolve('busybox'));
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
    const error = await errorOf(new ImageStore({ imagesDir: copyDir, cacheDir: path.join(workDir, 'cache-cc') }).resolve('busybox'));
    expect(error.message).toMatch(/blob sha256:[a-f0-9]{64} is corrupt/);
  });
});

describe('ImageStore with hand-made layers', () => {
  it('applies layers in order with whiteouts and opaque directories', async () => {
    const layoutsDir = path.join(workDir, 'layouts-whiteout');
    await writeLayout(layoutsDir, 'layered', [
      [dir('etc'), file('etc/keep', 'lower'), file('etc/gone', 'x'), dir('opt'), file('opt/old', 'x'), dir('opt/sub')],
      [file('etc/.wh.gone', ''), file('opt/.wh..wh..opq', ''), file('opt/new', 'upper'), file('etc/keep', 'upper')],
    ]);
    const image = await new ImageStore({ imagesDir: layoutsDir, cacheDir: path.join(workDir, 'cache-wh') }).resolve('layered');
    expect(await readFile(path.join(image.rootfsDir, 'etc/keep'), 'utf8')).toBe('upper');
    expect((await readdir(path.join(image.rootfsDir, 'etc'))).sort()).toEqual(['keep']);
    expect(await readdir(path.join(image.rootfsDir, 'opt'))).toEqual(['new']);
  });

  it.each([
    ['an absolute name', [[file('/etc/evil', 'x')]]],
    ['a ".." name', [[file('a/../../evil', 'x')]]],
    ['a hardlink out of the rootfs', [[link('stolen', '../../../etc/passwd')]]],
    ['a file below a symlink of the same layer', [[symlink('etc', '/tmp'), file('etc/evil', 'x')]]],
    ['a file below a symlink of a lower layer', [[symlink('etc', '/tmp')], [file('etc/evil', 'x')]]],
    ['a whiteout of ".."', [[file('.wh...', '')]]],
  ])('rejects %s before anything is written outside', async (_what, layers) => {
    const layoutsDir = path.join(workDir, `layouts-evil-${Math.random().toString(36).slice(2)}`);
    await writeLayout(layoutsDir, 'evil', layers);
    const cacheDir = path.join(layoutsDir, 'cache');
    const error = await errorOf(new ImageStore({ imagesDir: layoutsDir, cacheDir }).resolve('evil'));
    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error.message).toMatch(/escapes the rootfs|absolute entry name|through the symlink|malformed whiteout/);
    expect(await readdir(cacheDir)).toEqual([]);
    await expect(lstat('/tmp/evil')).rejects.toThrow();
  });

  it('checks diff_ids against the uncompressed layer', async () => {
    const layoutsDir = path.join(workDir, 'layouts-diffid');
    await writeLayout(layoutsDir, 'wrongdiff', [[file('a', 'x')]], { diffIds: [`sha256:${'0'.repeat(64)}`] });
    const error = await errorOf(new ImageStore({ imagesDir: layoutsDir, cacheDir: path.join(layoutsDir, 'cache') }).resolve('wrongdiff'));
    expect(error.message).toContain("the config's diff_id says sha256:000");
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

// --- helpers: tiny tar writer and OCI layout writer ---------------------------------------------

interface TarMember { name: string; type: '0' | '1' | '2' | '5'; body: Buffer; linkName: string; mode: number }

const file = (name: string, content: string): TarMember => ({ name, type: '0', body: Buffer.from(content), linkName: '', mode: 0o644 });
const dir = (name: string): TarMember => ({ name, type: '5', body: Buffer.alloc(0), linkName: '', mode: 0o755 });
const symlink = (name: string, target: string): TarMember => ({ name, type: '2', body: Buffer.alloc(0), linkName: target, mode: 0o777 });
const link = (name: string, target: string): TarMember => ({ name, type: '1', body: Buffer.alloc(0), linkName: target, mode: 0o644 });

function tarHeader(member: TarMember): Buffer {
  const header = Buffer.alloc(512);
  const put = (text: string, offset: number, length: number) => header.write(text, offset, length, 'latin1');
  const octal = (value: number, offset: number, length: number) => put(value.toString(8).padStart(length - 1, '0'), offset, length - 1);
  put(member.name, 0, 100);
  octal(member.mode, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(member.body.length, 124, 12);
  octal(0, 136, 12);
  put(' '.repeat(8), 148, 8);
  put(member.type, 156, 1);
  put(member.linkName, 157, 100);
  put('ustar\u000000', 257, 8);
  const sum = header.reduce((total, byte) => total + byte, 0);
  put(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8);
  return header;
}

function tarOf(members: TarMember[]): Buffer {
  const parts = members.flatMap((member) => [tarHeader(member), member.body, Buffer.alloc((512 - (member.body.length % 512)) % 512)]);
  return Buffer.concat([...parts, Buffer.alloc(1024)]);
}

async function writeBlob(layoutDir: string, content: Buffer): Promise<{ digest: string; size: number }> {
  const hex = createHash('sha256').update(content).digest('hex');
  await writeFile(path.join(layoutDir, 'blobs/sha256', hex), content);
  return { digest: `sha256:${hex}`, size: content.length };
}

async function writeLayout(imagesRoot: string, name: string, layers: TarMember[][], options: { diffIds?: string[] } = {}): Promise<void> {
  const layoutDir = path.join(imagesRoot, name);
  await mkdir(path.join(layoutDir, 'blobs/sha256'), { recursive: true });
  const tars = layers.map(tarOf);
  const layerDescriptors = [];
  for (const tar of tars) layerDescriptors.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...(await writeBlob(layoutDir, gzipSync(tar))) });
  const diffIds = options.diffIds ?? tars.map((tar) => `sha256:${createHash('sha256').update(tar).digest('hex')}`);
  const config = { architecture: 'amd64', os: 'linux', config: { Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: diffIds } };
  const configDescriptor = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await writeBlob(layoutDir, Buffer.from(JSON.stringify(config)))) };
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDescriptor, layers: layerDescriptors };
  const manifestDescriptor = { mediaType: manifest.mediaType, ...(await writeBlob(layoutDir, Buffer.from(JSON.stringify(manifest)))) };
  const index = { schemaVersion: 2, manifests: [{ ...manifestDescriptor, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] };
  await writeFile(path.join(layoutDir, 'index.json'), JSON.stringify(index));
  await writeFile(path.join(layoutDir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
}

async function readBlobJson(layoutsDir: string, digest: string) {
  return JSON.parse(await readFile(path.join(layoutsDir, 'busybox/blobs/sha256', digest.slice(7)), 'utf8'));
}

async function largestFile(dirPath: string): Promise<string> {
  const names = await readdir(dirPath);
  const sized = await Promise.all(names.map(async (name) => ({ name, size: (await stat(path.join(dirPath, name))).size })));
  return path.join(dirPath, sized.sort((a, b) => b.size - a.size)[0]!.name);
}
