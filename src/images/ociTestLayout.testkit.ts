import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

/**
 * Test-only: writes tar layers byte by byte (so a spec controls every header, hostile ones included)
 * and wraps them in an OCI image layout that ImageStore reads.
 */

export interface TarMember {
  name: string;
  /** The ustar typeflag: '0' file, '1' hardlink, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, 'x' pax, 'L' GNU long name. */
  type: string;
  body: Buffer;
  linkName: string;
  mode: number;
  uid: number;
  gid: number;
  devMajor: number;
  devMinor: number;
}

const member = (name: string, type: string, fields: Partial<TarMember> = {}): TarMember => ({
  name, type, body: Buffer.alloc(0), linkName: '', mode: 0o644, uid: 0, gid: 0, devMajor: 0, devMinor: 0, ...fields,
});

export const file = (name: string, content: string | Buffer, fields: Partial<TarMember> = {}): TarMember =>
  member(name, '0', { body: Buffer.from(content), ...fields });
export const dir = (name: string, fields: Partial<TarMember> = {}): TarMember => member(name, '5', { mode: 0o755, ...fields });
export const symlink = (name: string, target: string): TarMember => member(name, '2', { linkName: target, mode: 0o777 });
export const hardlink = (name: string, target: string): TarMember => member(name, '1', { linkName: target });
export const charDevice = (name: string, devMajor: number, devMinor: number): TarMember => member(name, '3', { devMajor, devMinor, mode: 0o666 });
export const blockDevice = (name: string, devMajor: number, devMinor: number): TarMember => member(name, '4', { devMajor, devMinor, mode: 0o660 });
export const fifo = (name: string): TarMember => member(name, '6');

/** A pax extended header ('x') that applies its records to the next entry. */
export function paxHeader(records: Record<string, string>): TarMember {
  const lines = Object.entries(records).map(([key, value]) => {
    const text = ` ${key}=${value}\n`;
    let length = Buffer.byteLength(text) + 1;
    while (String(length).length + Buffer.byteLength(text) !== length) length = String(length).length + Buffer.byteLength(text);
    return `${length}${text}`;
  });
  return member('PaxHeaders/entry', 'x', { body: Buffer.from(lines.join('')) });
}

/** A GNU long-name header ('L') that names the next entry. */
export const gnuLongName = (name: string): TarMember => member('././@LongLink', 'L', { body: Buffer.from(`${name}\0`) });

function tarHeader(entry: TarMember): Buffer {
  const header = Buffer.alloc(512);
  const put = (text: string, offset: number, length: number) => header.write(text, offset, length, 'latin1');
  const octal = (value: number, offset: number, length: number) => put(value.toString(8).padStart(length - 1, '0'), offset, length - 1);
  put(entry.name, 0, 100);
  octal(entry.mode, 100, 8);
  octal(entry.uid, 108, 8);
  octal(entry.gid, 116, 8);
  octal(entry.body.length, 124, 12);
  octal(0, 136, 12);
  put(' '.repeat(8), 148, 8);
  put(entry.type, 156, 1);
  put(entry.linkName, 157, 100);
  put('ustar\u000000', 257, 8);
  octal(entry.devMajor, 329, 8);
  octal(entry.devMinor, 337, 8);
  const sum = header.reduce((total, byte) => total + byte, 0);
  put(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8);
  return header;
}

export function tarOf(members: TarMember[]): Buffer {
  const parts = members.flatMap((entry) => [tarHeader(entry), entry.body, Buffer.alloc((512 - (entry.body.length % 512)) % 512)]);
  return Buffer.concat([...parts, Buffer.alloc(1024)]);
}

async function writeBlob(layoutDir: string, content: Buffer): Promise<{ digest: string; size: number }> {
  const hex = createHash('sha256').update(content).digest('hex');
  await writeFile(path.join(layoutDir, 'blobs/sha256', hex), content);
  return { digest: `sha256:${hex}`, size: content.length };
}

/** Writes `<imagesRoot>/<name>` tagged `latest`; a layer is a list of members or a ready tar. Layers are gzipped. */
export async function writeLayout(imagesRoot: string, name: string, layers: Array<TarMember[] | Buffer>, options: { diffIds?: string[] } = {}): Promise<void> {
  const layoutDir = path.join(imagesRoot, name);
  await mkdir(path.join(layoutDir, 'blobs/sha256'), { recursive: true });
  const tars = layers.map((layer) => (Buffer.isBuffer(layer) ? layer : tarOf(layer)));
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
