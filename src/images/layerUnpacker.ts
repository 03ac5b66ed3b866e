import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import { failedPrecondition, internal, isKtsError, unimplemented } from '../core/errors.js';
import type { Descriptor, OciLayout } from './ociLayout.js';

/**
 * Applies image layers, lowest first, onto a rootfs directory. Each layer's blob digest and
 * uncompressed diff_id are verified here; kts-unpack (src/images/unpack) then extracts it from inside
 * a chroot of the rootfs, so the kernel keeps every write beneath the rootfs whatever the headers say.
 */

export interface Layer {
  descriptor: Descriptor;
  /** `sha256:…` of the uncompressed tar, from the image config's rootfs.diff_ids. */
  diffId: string;
}

export interface UnpackLimits {
  /** `[images] max_layer_bytes`: uncompressed bytes one layer may hold. */
  maxLayerBytes: number;
  /** `[images] max_layer_entries`: tar entries one layer may hold. */
  maxLayerEntries: number;
}

export interface UnpackOptions extends UnpackLimits {
  /** kts-unpack, built by scripts/build-native.sh. */
  unpackBinary: string;
}

const MAX_HELPER_STDERR = 16 * 1024;
/** kts-unpack's exit code for a layer it refuses (2: it could not start). */
const LAYER_REFUSED = 1;

/** `<repo>/dist/native/kts-unpack`, found from this module's location in src/ or dist/src/. */
export function defaultUnpackBinary(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return path.join(dir, 'dist', 'native', 'kts-unpack');
}

export async function unpackLayers(layout: OciLayout, layers: Layer[], rootfsDir: string, options: UnpackOptions): Promise<void> {
  for (const [i, layer] of layers.entries()) {
    const where = `layer ${i} (${layer.descriptor.digest})`;
    const gzipped = isGzipped(layout, layer.descriptor);
    await layout.verifyBlob(layer.descriptor);
    await verifyDiffId(layout, layer, gzipped, where, options.maxLayerBytes);
    // The blob was verified above; the layout directory is ours, so it does not change in between.
    await runUnpacker(layout, where, options.unpackBinary, [
      '--input', layout.blobPath(layer.descriptor.digest), '--rootfs', rootfsDir, ...(gzipped ? ['--gzip'] : []),
      '--max-bytes', String(options.maxLayerBytes), '--max-entries', String(options.maxLayerEntries),
    ]);
  }
}

function isGzipped(layout: OciLayout, descriptor: Descriptor): boolean {
  const mediaType = descriptor.mediaType;
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return true;
  if (mediaType.endsWith('+zstd')) throw unimplemented(`image ${layout.label}: zstd-compressed layers are not supported`);
  if (mediaType.endsWith('.tar') || mediaType === 'application/vnd.docker.image.rootfs.diff.tar') return false;
  throw layout.corrupt(`layer ${descriptor.digest} has unknown media type "${mediaType}"`);
}

/** Streams the uncompressed layer through sha256, stopping once it passes max_layer_bytes. */
async function verifyDiffId(layout: OciLayout, layer: Layer, gzipped: boolean, where: string, maxLayerBytes: number): Promise<void> {
  const diffHash = createHash('sha256');
  try {
    await pipeline(
      createReadStream(layout.blobPath(layer.descriptor.digest)),
      gzipped ? createGunzip() : new PassThrough(),
      hashingAtMost(diffHash, maxLayerBytes),
    );
  } catch (error) {
    throw layout.corrupt(`${where}: ${isKtsError(error) ? error.message : `cannot be read: ${String(error)}`}`);
  }
  const diffId = `sha256:${diffHash.digest('hex')}`;
  if (diffId !== layer.diffId) throw layout.corrupt(`${where}: uncompressed content is ${diffId}, the config's diff_id says ${layer.diffId}`);
}

function hashingAtMost(hash: Hash, maxBytes: number): Writable {
  let total = 0;
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      total += chunk.length;
      if (total > maxBytes) {
        callback(failedPrecondition(`the layer decompresses to more than max_layer_bytes (${maxBytes}) bytes`));
        return;
      }
      hash.update(chunk);
      callback();
    },
  });
}

function runUnpacker(layout: OciLayout, where: string, binary: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < MAX_HELPER_STDERR) stderr += text;
    });
    child.on('error', (error) => reject(internal(`cannot run ${binary}: ${error.message}`, error)));
    child.on('close', (code, signal) => {
      const message = stderr.trim().slice(0, 2000).replace(/^kts-unpack: /, '');
      if (code === 0) resolve();
      else if (code === LAYER_REFUSED) reject(layout.corrupt(`${where}: ${message}`));
      else reject(internal(`${binary} failed on ${where} (${signal ?? `exit ${code}`}): ${message}`));
    });
  });
}
