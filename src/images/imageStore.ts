import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition, notFound } from '../core/errors.js';
import { withSpan } from '../telemetry/tracing.js';
import { formatImageRef, parseImageRef, type ImageRef } from './imageRef.js';
import { defaultUnpackBinary, unpackLayers, type Layer, type UnpackLimits } from './layerUnpacker.js';
import type { ImageConfig } from '../oci/imageConfig.js';
import { isObject } from '../oci/json.js';
import { MEDIA_TYPES, OciLayout, REF_NAME_ANNOTATION, type Descriptor } from './ociLayout.js';

export type { ImageConfig };

export interface ResolvedImage {
  name: string;
  tag: string;
  /** `sha256:…` of the image manifest (for this platform). */
  manifestDigest: string;
  config: ImageConfig;
  /** Unpacked, shared by every container of this image: use it read-only (as an overlay lowerdir). */
  rootfsDir: string;
}

export interface ImageSummary {
  name: string;
  tag: string;
  /** Digest of what index.json names: a manifest, or a per-platform index. */
  manifestDigest: string;
}

export interface ImageStoreOptions extends UnpackLimits {
  /** Holds one OCI image layout per image name: `<imagesDir>/<name>/index.json`. */
  imagesDir: string;
  /** Holds unpacked root filesystems: `<cacheDir>/<manifest digest hex>/rootfs`. */
  cacheDir: string;
  /** kts-unpack; defaults to the one scripts/build-native.sh builds. */
  unpackBinary?: string;
}

const HOST_ARCHITECTURE: string = ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[process.arch] ?? process.arch;
const MANIFEST_TYPES = new Set<string>([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);
const INDEX_TYPES = new Set<string>([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]);

/**
 * Local images (no registry is reachable): OCI layouts built by scripts/build-images.sh or copied in.
 * A rootfs is unpacked once per manifest digest, into a temporary directory renamed into place, so a
 * directory under cacheDir named for a digest is always complete (also across daemon crashes).
 */
export class ImageStore {
  private readonly unpacking = new Map<string, Promise<string>>();

  constructor(private readonly options: ImageStoreOptions) {}

  /** One span, `image.resolve`, with `image.unpack` inside it when the image is not unpacked yet. */
  resolve(ref: string): Promise<ResolvedImage> {
    return withSpan('image.resolve', { attributes: { 'container.image.name': ref.slice(0, 200) } }, () => this.resolveImage(ref));
  }

  private async resolveImage(ref: string): Promise<ResolvedImage> {
    const imageRef = parseImageRef(ref);
    const layoutDir = path.join(this.options.imagesDir, imageRef.name);
    const tagged = imageRef.name.includes('/') ? undefined : await this.findTagged(layoutDir, imageRef);
    if (!tagged) throw await this.notFoundError(ref);
    const layout = new OciLayout(layoutDir, formatImageRef(imageRef));
    const manifestDescriptor = await this.platformManifest(layout, tagged);
    const manifest = await layout.readJsonBlob(manifestDescriptor);
    const configDescriptor = layout.descriptor(manifest.config, 'manifest: config');
    const layerDescriptors = layout.readDescriptorList(manifest, 'layers', 'manifest');
    const { config, diffIds } = parseImageConfig(layout, await layout.readJsonBlob(configDescriptor));
    if (diffIds.length !== layerDescriptors.length) {
      throw layout.corrupt(`the manifest has ${layerDescriptors.length} layers but the config has ${diffIds.length} diff_ids`);
    }
    const layers = layerDescriptors.map((descriptor, i): Layer => ({ descriptor, diffId: diffIds[i]! }));
    const rootfsDir = await this.unpackOnce(layout, manifestDescriptor.digest, layers);
    return { ...imageRef, manifestDigest: manifestDescriptor.digest, config, rootfsDir };
  }

  /** Every tagged image of every layout; a layout that cannot be read is left out. */
  async list(): Promise<ImageSummary[]> {
    const dirents = await readdir(this.options.imagesDir, { withFileTypes: true }).catch(() => []);
    const names = dirents.filter((dirent) => dirent.isDirectory() && !dirent.name.startsWith('.')).map((dirent) => dirent.name);
    const images: ImageSummary[] = [];
    for (const name of names.sort()) {
      const layout = new OciLayout(path.join(this.options.imagesDir, name), name);
      const descriptors = await layout.readIndex().catch(() => [] as Descriptor[]);
      for (const descriptor of descriptors) {
        const tag = tagOf(descriptor);
        if (tag !== undefined) images.push({ name, tag, manifestDigest: descriptor.digest });
      }
    }
    return images.sort((a, b) => a.name.localeCompare(b.name) || a.tag.localeCompare(b.tag));
  }

  private async findTagged(layoutDir: string, imageRef: ImageRef): Promise<Descriptor | undefined> {
    const hasIndex = await stat(path.join(layoutDir, 'index.json')).then((stats) => stats.isFile(), () => false);
    if (!hasIndex) return undefined;
    const descriptors = await new OciLayout(layoutDir, formatImageRef(imageRef)).readIndex();
    return descriptors.find((descriptor) => tagOf(descriptor) === imageRef.tag);
  }

  private async notFoundError(ref: string) {
    const available = (await this.list()).map(formatImageRef);
    return notFound(`image "${ref}" not found in ${this.options.imagesDir}; available: ${available.join(', ') || 'none'}`);
  }

  /** Follows one level of multi-platform index to the manifest for this host. */
  private async platformManifest(layout: OciLayout, tagged: Descriptor): Promise<Descriptor> {
    let descriptor = tagged;
    if (INDEX_TYPES.has(descriptor.mediaType)) {
      const candidates = layout.readDescriptorList(await layout.readJsonBlob(descriptor), 'manifests', `index ${descriptor.digest}`);
      const match = candidates.find((c) => c.platform?.os === 'linux' && c.platform.architecture === HOST_ARCHITECTURE);
      if (!match) throw failedPrecondition(`image ${layout.label} has no manifest for linux/${HOST_ARCHITECTURE}`);
      descriptor = match;
    }
    if (!MANIFEST_TYPES.has(descriptor.mediaType)) throw layout.corrupt(`${descriptor.digest} has unsupported media type "${descriptor.mediaType}"`);
    return descriptor;
  }

  private async unpackOnce(layout: OciLayout, manifestDigest: string, layers: Layer[]): Promise<string> {
    const hex = manifestDigest.slice('sha256:'.length);
    const imageDir = path.join(this.options.cacheDir, hex);
    const rootfsDir = path.join(imageDir, 'rootfs');
    if (await stat(imageDir).then(() => true, () => false)) return rootfsDir;
    let pending = this.unpacking.get(hex);
    if (!pending) {
      const unpack = () => this.unpackInto(layout, imageDir, layers);
      pending = withSpan('image.unpack', { attributes: { 'image.manifest_digest': manifestDigest, 'image.layers': layers.length } }, unpack)
        .then(() => rootfsDir).finally(() => this.unpacking.delete(hex));
      this.unpacking.set(hex, pending);
    }
    return pending;
  }

  private async unpackInto(layout: OciLayout, imageDir: string, layers: Layer[]): Promise<void> {
    await mkdir(this.options.cacheDir, { recursive: true });
    const tmpDir = await mkdtemp(path.join(this.options.cacheDir, `.tmp-${path.basename(imageDir).slice(0, 12)}-`));
    try {
      // Explicit modes: the daemon's umask (077) must not make a container's "/" unreadable to its users.
      await chmod(tmpDir, 0o755);
      await mkdir(path.join(tmpDir, 'rootfs'));
      await chmod(path.join(tmpDir, 'rootfs'), 0o755);
      const { maxLayerBytes, maxLayerEntries, unpackBinary = defaultUnpackBinary() } = this.options;
      await unpackLayers(layout, layers, path.join(tmpDir, 'rootfs'), { maxLayerBytes, maxLayerEntries, unpackBinary });
      await rename(tmpDir, imageDir).catch(async (error: NodeJS.ErrnoException) => {
        // Another process finished the same digest first; its copy is as good as ours.
        if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
      });
    } finally {
      await rm(tmpDir, { recursive: true, force: true });
    }
  }
}

/** The tag an index entry is published under: `latest`, or the tag of a full `name:tag` reference. */
function tagOf(descriptor: Descriptor): string | undefined {
  const refName = descriptor.annotations[REF_NAME_ANNOTATION];
  if (refName === undefined || refName === '') return undefined;
  if (!refName.includes(':') && !refName.includes('/')) return refName;
  try {
    return parseImageRef(refName).tag;
  } catch {
    return undefined;
  }
}

function parseImageConfig(layout: OciLayout, json: Record<string, unknown>): { config: ImageConfig; diffIds: string[] } {
  const section = json.config ?? {};
  if (!isObject(section)) throw layout.corrupt('config: config must be an object');
  const rootfs = json.rootfs;
  if (!isObject(rootfs)) throw layout.corrupt('config: rootfs must be an object');
  const diffIds = stringArray(layout, rootfs.diff_ids, 'rootfs.diff_ids');
  const workingDir = optionalString(layout, section.WorkingDir, 'config.WorkingDir');
  if (workingDir !== '' && !workingDir.startsWith('/')) throw layout.corrupt(`config: config.WorkingDir "${workingDir}" must be absolute`);
  const config: ImageConfig = {
    cmd: stringArray(layout, section.Cmd, 'config.Cmd'),
    entrypoint: stringArray(layout, section.Entrypoint, 'config.Entrypoint'),
    env: stringArray(layout, section.Env, 'config.Env'),
    workingDir,
  };
  const user = optionalString(layout, section.User, 'config.User');
  if (user !== '') config.user = user;
  return { config, diffIds };
}

function stringArray(layout: OciLayout, value: unknown, field: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) throw layout.corrupt(`config: ${field} must be an array of strings`);
  return value;
}

function optionalString(layout: OciLayout, value: unknown, field: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw layout.corrupt(`config: ${field} must be a string`);
  return value;
}
