import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { internal, isKtsError, unimplemented } from '../core/errors.js';
import type { Descriptor, OciLayout } from './ociLayout.js';
import { listTarEntries, type TarEntry } from './tarEntries.js';

/**
 * Applies image layers, lowest first, onto a rootfs directory with GNU tar. Before tar sees a layer
 * its blob digest and uncompressed diff_id are verified and its entries are checked: nothing may be
 * written through a symlink (which could point anywhere on the host while we unpack as root).
 */

export interface Layer {
  descriptor: Descriptor;
  /** `sha256:…` of the uncompressed tar, from the image config's rootfs.diff_ids. */
  diffId: string;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_WHITEOUT = '.wh..wh..opq';
/** aufs bookkeeping entries (.wh..wh.plnk, .wh..wh.aufs): not whiteouts, never extracted. */
const AUFS_META_PREFIX = '.wh..wh.';
const MAX_TAR_STDERR = 16 * 1024;

export async function unpackLayers(layout: OciLayout, layers: Layer[], rootfsDir: string): Promise<void> {
  for (const [i, layer] of layers.entries()) {
    const where = `layer ${i} (${layer.descriptor.digest})`;
    const gzipped = isGzipped(layout, layer.descriptor);
    await layout.verifyBlob(layer.descriptor);
    const entries = await scanLayer(layout, layer, gzipped, where);
    const whiteouts = entries.filter((entry) => path.posix.basename(entry.path).startsWith(WHITEOUT_PREFIX));
    await assertNotThroughSymlinks(layout, rootfsDir, whiteouts, where);
    await applyWhiteouts(layout, rootfsDir, whiteouts, where);
    await assertNotThroughSymlinks(layout, rootfsDir, entries, where);
    // The blob was verified above; the layout directory is ours, so it does not change in between.
    await runTar(['-x', '-f', layout.blobPath(layer.descriptor.digest), ...(gzipped ? ['-z'] : []), '-C', rootfsDir,
      '--numeric-owner', '--wildcards', `--exclude=${WHITEOUT_PREFIX}*`]);
  }
}

function isGzipped(layout: OciLayout, descriptor: Descriptor): boolean {
  const mediaType = descriptor.mediaType;
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return true;
  if (mediaType.endsWith('+zstd')) throw unimplemented(`image ${layout.label}: zstd-compressed layers are not supported`);
  if (mediaType.endsWith('.tar') || mediaType === 'application/vnd.docker.image.rootfs.diff.tar') return false;
  throw layout.corrupt(`layer ${descriptor.digest} has unknown media type "${mediaType}"`);
}

async function scanLayer(layout: OciLayout, layer: Layer, gzipped: boolean, where: string): Promise<TarEntry[]> {
  const diffHash = createHash('sha256');
  let entries: TarEntry[] = [];
  let listingError: unknown;
  try {
    await pipeline(
      createReadStream(layout.blobPath(layer.descriptor.digest)),
      gzipped ? createGunzip() : new PassThrough(),
      hashing(diffHash),
      async (source: AsyncIterable<Buffer>) => {
        entries = await listTarEntries(source).catch((error: unknown) => {
          listingError = error;
          throw error;
        });
      },
    );
  } catch (error) {
    // pipeline reports a failed destination as an AbortError; the listing's own error says what is wrong.
    const cause = listingError ?? error;
    throw layout.corrupt(`${where}: ${isKtsError(cause) ? cause.message : `cannot be read: ${String(cause)}`}`);
  }
  const diffId = `sha256:${diffHash.digest('hex')}`;
  if (diffId !== layer.diffId) throw layout.corrupt(`${where}: uncompressed content is ${diffId}, the config's diff_id says ${layer.diffId}`);
  return entries;
}

function hashing(hash: Hash): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
}

/** Rejects an entry (or hardlink target) below a symlink already in the rootfs or earlier in this layer. */
async function assertNotThroughSymlinks(layout: OciLayout, rootfsDir: string, entries: TarEntry[], where: string): Promise<void> {
  const layerSymlinks = new Set<string>();
  const isSymlinkOnDisk = new Map<string, boolean>();
  for (const entry of entries) {
    for (const target of entry.type === 'hardlink' ? [entry.path, entry.linkPath] : [entry.path]) {
      for (const ancestor of ancestorsOf(target)) {
        if (layerSymlinks.has(ancestor) || (await cachedIsSymlink(rootfsDir, ancestor, isSymlinkOnDisk))) {
          throw layout.corrupt(`${where}: "${target}" would be written through the symlink "${ancestor}"`);
        }
      }
    }
    if (entry.type === 'symlink') layerSymlinks.add(entry.path);
    else layerSymlinks.delete(entry.path);
  }
}

function ancestorsOf(entryPath: string): string[] {
  const parts = entryPath.split('/');
  return parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join('/'));
}

async function cachedIsSymlink(rootfsDir: string, relative: string, cache: Map<string, boolean>): Promise<boolean> {
  let known = cache.get(relative);
  if (known === undefined) {
    known = await lstat(path.join(rootfsDir, relative)).then((stats) => stats.isSymbolicLink(), () => false);
    cache.set(relative, known);
  }
  return known;
}

/** A whiteout hides a lower layer's file; an opaque whiteout hides a lower layer's whole directory. */
async function applyWhiteouts(layout: OciLayout, rootfsDir: string, whiteouts: TarEntry[], where: string): Promise<void> {
  for (const whiteout of whiteouts) {
    const dir = path.join(rootfsDir, path.posix.dirname(whiteout.path));
    const base = path.posix.basename(whiteout.path);
    if (base === OPAQUE_WHITEOUT) {
      const children = await readdir(dir).catch(() => [] as string[]);
      await Promise.all(children.map((child) => rm(path.join(dir, child), { recursive: true, force: true })));
      continue;
    }
    if (base.startsWith(AUFS_META_PREFIX)) continue;
    const hidden = base.slice(WHITEOUT_PREFIX.length);
    if (hidden === '' || hidden === '.' || hidden === '..') throw layout.corrupt(`${where}: malformed whiteout "${whiteout.path}"`);
    await rm(path.join(dir, hidden), { recursive: true, force: true });
  }
}

function runTar(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < MAX_TAR_STDERR) stderr += text;
    });
    child.on('error', (error) => reject(internal(`cannot run tar: ${error.message}`, error)));
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(internal(`tar ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim().slice(0, 2000)}`));
    });
  });
}
