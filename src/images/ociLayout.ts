import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition, KtsError, unimplemented } from '../core/errors.js';
import { isObject } from '../oci/json.js';

/** Reads one OCI image layout directory; every blob is checked against its digest before use. */

export const MEDIA_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  /** `sha256:<64 hex>`; other algorithms are refused. */
  digest: string;
  size: number;
  annotations: Record<string, string>;
  platform?: { architecture: string; os: string };
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;
const MAX_JSON_BYTES = 4 << 20;

export class OciLayout {
  /** `label` names the image in error messages, e.g. "busybox:latest". */
  constructor(
    readonly dir: string,
    readonly label: string,
  ) {}

  corrupt(what: string): KtsError {
    return failedPrecondition(`image ${this.label} in ${this.dir} is unusable: ${what}`);
  }

  async readIndex(): Promise<Descriptor[]> {
    const index = await this.readJsonFile(path.join(this.dir, 'index.json'), 'index.json');
    return this.readDescriptorList(index, 'manifests', 'index.json');
  }

  /** A manifest list (index) or image manifest blob, verified. */
  async readJsonBlob(descriptor: Descriptor): Promise<Record<string, unknown>> {
    const bytes = await this.readBlobBytes(descriptor);
    return this.parseJsonObject(bytes, `blob ${descriptor.digest}`);
  }

  blobPath(digest: string): string {
    if (!DIGEST.test(digest)) {
      if (/^[a-z0-9]+:/.test(digest) && !digest.startsWith('sha256:')) throw unimplemented(`image ${this.label}: digest algorithm of "${digest.slice(0, 80)}" is not supported`);
      throw this.corrupt(`"${digest.slice(0, 80)}" is not a sha256 digest`);
    }
    return path.join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  }

  /** Streams the blob through sha256 and checks its size; nothing reads its content before this. */
  async verifyBlob(descriptor: Descriptor): Promise<void> {
    const hash = createHash('sha256');
    let size = 0;
    try {
      for await (const chunk of createReadStream(this.blobPath(descriptor.digest))) {
        hash.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
    } catch (error) {
      throw this.blobError(descriptor, error);
    }
    this.checkBlob(descriptor, size, `sha256:${hash.digest('hex')}`);
  }

  descriptor(value: unknown, where: string): Descriptor {
    if (!isObject(value)) throw this.corrupt(`${where} must be an object`);
    const { mediaType, digest, size, annotations, platform } = value;
    if (typeof mediaType !== 'string') throw this.corrupt(`${where}.mediaType must be a string`);
    if (typeof digest !== 'string') throw this.corrupt(`${where}.digest must be a string`);
    this.blobPath(digest);
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw this.corrupt(`${where}.size must be a non-negative integer`);
    const descriptor: Descriptor = { mediaType, digest, size, annotations: stringRecord(annotations) };
    if (isObject(platform) && typeof platform.architecture === 'string' && typeof platform.os === 'string') {
      descriptor.platform = { architecture: platform.architecture, os: platform.os };
    }
    return descriptor;
  }

  readDescriptorList(parent: Record<string, unknown>, key: string, where: string): Descriptor[] {
    const list = parent[key];
    if (!Array.isArray(list)) throw this.corrupt(`${where}: ${key} must be an array`);
    return list.map((item, i) => this.descriptor(item, `${where}: ${key}[${i}]`));
  }

  private async readBlobBytes(descriptor: Descriptor): Promise<Buffer> {
    if (descriptor.size > MAX_JSON_BYTES) throw this.corrupt(`blob ${descriptor.digest} is ${descriptor.size} bytes, more than ${MAX_JSON_BYTES}`);
    let bytes: Buffer;
    try {
      bytes = await readAtMost(this.blobPath(descriptor.digest), MAX_JSON_BYTES);
    } catch (error) {
      throw this.blobError(descriptor, error);
    }
    this.checkBlob(descriptor, bytes.length, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    return bytes;
  }

  private checkBlob(descriptor: Descriptor, size: number, actualDigest: string): void {
    if (actualDigest !== descriptor.digest) throw this.corrupt(`blob ${descriptor.digest} is corrupt: its content hashes to ${actualDigest}`);
    if (size !== descriptor.size) throw this.corrupt(`blob ${descriptor.digest} is ${size} bytes, the descriptor says ${descriptor.size}`);
  }

  private blobError(descriptor: Descriptor, error: unknown): KtsError {
    if (error instanceof KtsError) return error;
    const code = (error as NodeJS.ErrnoException).code;
    return this.corrupt(code === 'ENOENT' ? `blob ${descriptor.digest} is missing` : `cannot read blob ${descriptor.digest}: ${String(error)}`);
  }

  private async readJsonFile(file: string, what: string): Promise<Record<string, unknown>> {
    let bytes: Buffer;
    try {
      bytes = await readAtMost(file, MAX_JSON_BYTES);
    } catch (error) {
      throw error instanceof KtsError ? error : this.corrupt(`cannot read ${what}: ${String(error)}`);
    }
    return this.parseJsonObject(bytes, what);
  }

  private parseJsonObject(bytes: Buffer, what: string): Record<string, unknown> {
    let value: unknown;
    try {
      value = JSON.parse(bytes.toString('utf8'));
    } catch (error) {
      throw this.corrupt(`${what} is not JSON: ${String(error)}`);
    }
    if (!isObject(value)) throw this.corrupt(`${what} must be a JSON object`);
    return value;
  }
}

function stringRecord(value: unknown): Record<string, string> {
  if (!isObject(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((pair): pair is [string, string] => typeof pair[1] === 'string'));
}

async function readAtMost(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    if (size > maxBytes) throw failedPrecondition(`${file} is ${size} bytes, more than ${maxBytes}`);
    // One byte of headroom notices a file that grew since stat.
    const buffer = Buffer.alloc(size + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > size) throw failedPrecondition(`${file} changed while being read`);
    }
    return buffer.subarray(0, length);
  } finally {
    await handle.close();
  }
}
