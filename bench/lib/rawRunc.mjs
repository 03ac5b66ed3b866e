// The floor: `runc run -d` of a plain bundle, the busybox image's rootfs (unpacked by kts's own
// image store from the same OCI layout) read-only under the spec `runc spec` writes, with the
// container's process replaced by `sleep 600`. Its own runc root, so it sees no one else's containers.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { dist, IMAGES_DIR } from './daemon.mjs';
import { runTimed } from './spawn.mjs';

const { ImageStore } = await dist('src/images/imageStore.js');
const { defaultImagesConfig } = await dist('src/images/config.js');

export async function prepareRawRunc() {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-bench-runc-'));
  const runcRoot = path.join(dir, 'state');
  const bundle = path.join(dir, 'bundle');
  const log = path.join(dir, 'runc.log');
  mkdirSync(bundle);
  // The daemon's default layer limits: the store refuses to unpack without them.
  const { maxLayerBytes, maxLayerEntries } = defaultImagesConfig(dir);
  const image = await new ImageStore({ imagesDir: IMAGES_DIR, cacheDir: path.join(dir, 'images'), maxLayerBytes, maxLayerEntries }).resolve('busybox:latest');
  execFileSync('runc', ['spec', '--bundle', bundle]);
  const spec = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8'));
  spec.root = { path: image.rootfsDir, readonly: true };
  spec.process.terminal = false;
  spec.process.args = ['sleep', '600'];
  writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
  const runc = (args, options) => runTimed('runc', ['--root', runcRoot, '--log', log, ...args], options);

  const floor = {
    dir, bundle,
    /** `runc run -d`: created and started; timed spawn → exit. Its stdio is /dev/null, as the container inherits it. */
    async run(id) {
      const result = await runc(['run', '-d', '--bundle', bundle, id], { capture: false });
      if (result.code !== 0) throw new Error(`runc run -d ${id} exited ${result.code}: ${readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ')}`);
      return result;
    },
    /**
     * `runc create` then `runc start`, the two steps CRI's CreateContainer and StartContainer make of one
     * start: what any CRI runtime built on runc pays at least.
     */
    async createStart(id) {
      const created = await runc(['create', '--bundle', bundle, id], { capture: false });
      if (created.code !== 0) throw new Error(`runc create ${id} exited ${created.code}: ${readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ')}`);
      const started = await runc(['start', id], { capture: false });
      if (started.code !== 0) throw new Error(`runc start ${id} exited ${started.code}: ${readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ')}`);
      return started;
    },
    remove: (id) => runc(['delete', '-f', id]),
    async removeAll() {
      const listed = await runc(['list', '-q']);
      for (const id of listed.stdout.split('\n').filter(Boolean)) await floor.remove(id);
    },
    async stop() {
      await floor.removeAll();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return floor;
}
