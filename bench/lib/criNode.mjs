// A containerd 2.4 node in front of kts, for critest and the CRI benchmark: scripts/containerd-node.sh
// does the work (config, kts daemon, containerd, image import, teardown); this wraps it with a node of
// its own (directory, sockets, CNI bridge and subnet), so it never collides with another node on the
// machine, and adds images derived from the busybox layout (critest's test images, built locally).
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { IMAGES_DIR, REPO } from './daemon.mjs';
import { runChecked, runTimed } from './spawn.mjs';

export const PEERS_DIR = process.env.KTS_PEERS_DIR ?? '/var/cache/kts/peers';
export const PEERS_BIN = path.join(PEERS_DIR, 'bin');
const NODE_SCRIPT = path.join(REPO, 'scripts/containerd-node.sh');

/** Why the peers cannot be used here, or undefined when they can (for a test's skip reason). */
export function peersMissing() {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const binary of ['containerd', 'ctr', 'containerd-shim-runc-v2', 'crictl', 'critest']) {
    if (!existsSync(path.join(PEERS_BIN, binary))) return `${path.join(PEERS_BIN, binary)} missing (bash scripts/build-peers.sh builds it)`;
  }
  if (!existsSync(path.join(REPO, 'dist/src/cli/main.js'))) return 'kts is not built (npm run build)';
  return undefined;
}

/**
 * A node description: `dir` holds everything (containerd root/state, the kts daemon's state under
 * dir/kts), `handlers` the CRI runtime handlers (kts-* through kts, `runc` containerd's own path).
 */
export function criNode({ dir, bridge, subnet, handlers = ['kts-runc', 'runc'], ktsConfig }) {
  const env = {
    ...process.env,
    KTS_CTD_DIR: dir, KTS_CTD_KTS_SOCKET: path.join(dir, 'kts/kts.sock'), KTS_CTD_START_KTS: '1',
    KTS_CTD_HANDLERS: handlers.join(' '), KTS_CTD_IMAGES_DIR: IMAGES_DIR, KTS_PEERS_DIR: PEERS_DIR,
    KTS_CTD_BRIDGE: bridge, KTS_CTD_SUBNET: subnet,
    ...(ktsConfig ? { KTS_CTD_KTS_CONFIG: ktsConfig } : {}),
  };
  const socket = path.join(dir, 'containerd.sock');
  const crictlConfig = path.join(dir, 'crictl.yaml');
  const node = {
    dir, socket, crictlConfig, env,
    ktsPidFile: path.join(dir, 'kts/kts.pid'),
    containerdPidFile: path.join(dir, 'containerd.pid'),
    up: async () => {
      // The busybox layout the node imports (idempotent: a stamp makes a second run cost nothing).
      await runChecked('bash', [path.join(REPO, 'scripts/build-images.sh'), IMAGES_DIR]);
      await runChecked('bash', [NODE_SCRIPT, 'up'], { env });
    },
    down: () => runTimed('bash', [NODE_SCRIPT, 'down'], { env }),
    crictl: (args) => runChecked(path.join(PEERS_BIN, 'crictl'), ['--config', crictlConfig, ...args]),
    crictlTimed: (args) => runTimed(path.join(PEERS_BIN, 'crictl'), ['--config', crictlConfig, ...args]),
    ctr: (args) => runChecked(path.join(PEERS_BIN, 'ctr'), ['--address', socket, '-n', 'k8s.io', ...args]),
  };
  return node;
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** Writes a blob into an OCI layout and returns its descriptor fields. */
function putBlob(layout, bytes) {
  const hex = sha256(bytes);
  writeFileSync(path.join(layout, 'blobs/sha256', hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

/**
 * An uncompressed tar layer, owned by root, holding `files`: { 'etc/passwd': text } or
 * { 'bin/x': { bytes, mode } } or { 'bin/ls': { symlink: 'busybox' } } or { 'bin/ls': { hardlink: 'bin/busybox' } }
 * (a hard link's target comes earlier in `files`).
 */
async function tarLayer(files, workDir) {
  const root = path.join(workDir, 'layer-root');
  rmSync(root, { recursive: true, force: true });
  for (const [name, entry] of Object.entries(files)) {
    const file = path.join(root, name);
    mkdirSync(path.dirname(file), { recursive: true });
    if (typeof entry === 'string') writeFileSync(file, entry);
    else if (entry.symlink) symlinkSync(entry.symlink, file);
    else if (entry.hardlink) linkSync(path.join(root, entry.hardlink), file);
    else writeFileSync(file, entry.bytes, { mode: entry.mode });
    if (entry.bytes !== undefined && entry.mode !== undefined) chmodSync(file, entry.mode);
  }
  const tarball = path.join(workDir, 'layer.tar');
  await runChecked('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', root, '-cf', tarball, ...Object.keys(files)]);
  rmSync(root, { recursive: true, force: true });
  return readFileSync(tarball);
}

/**
 * Derives an image from the busybox layout and imports it into k8s.io as `reference` (name:tag):
 * `config` is merged into the image config (Entrypoint, Cmd, User), `files` become one more layer.
 */
export async function importDerivedImage(node, reference, { config = {}, files } = {}) {
  const busybox = path.join(IMAGES_DIR, 'busybox');
  const blob = (digest) => readFileSync(path.join(busybox, 'blobs/sha256', digest.slice('sha256:'.length)));
  const index = JSON.parse(readFileSync(path.join(busybox, 'index.json'), 'utf8'));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString());
  const imageConfig = JSON.parse(blob(manifest.config.digest).toString());
  const workDir = mkdtempSync(path.join(node.dir, 'image-'));
  try {
    mkdirSync(path.join(workDir, 'layout/blobs/sha256'), { recursive: true });
    const layout = path.join(workDir, 'layout');
    for (const layer of manifest.layers) putBlob(layout, blob(layer.digest));
    const layers = [...manifest.layers];
    const diffIds = [...imageConfig.rootfs.diff_ids];
    if (files) {
      const tar = await tarLayer(files, workDir);
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...putBlob(layout, tar) });
      diffIds.push(`sha256:${sha256(tar)}`);
    }
    const derivedConfig = { ...imageConfig, config: { ...imageConfig.config, ...config }, rootfs: { type: 'layers', diff_ids: diffIds } };
    const configBlob = { mediaType: manifest.config.mediaType, ...putBlob(layout, Buffer.from(JSON.stringify(derivedConfig))) };
    const manifestBlob = putBlob(layout, Buffer.from(JSON.stringify({ ...manifest, config: configBlob, layers })));
    const colon = reference.lastIndexOf(':');
    const [name, tag] = colon > reference.lastIndexOf('/') ? [reference.slice(0, colon), reference.slice(colon + 1)] : [reference, 'latest'];
    writeFileSync(path.join(layout, 'index.json'), JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifestBlob, platform: index.manifests[0].platform, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }));
    writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    const tarball = path.join(workDir, 'image.tar');
    await runChecked('tar', ['-C', layout, '-cf', tarball, '.']);
    await node.ctr(['images', 'import', '--base-name', name, tarball]);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}
