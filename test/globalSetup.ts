// Builds the local test images once, before any spec file runs, so no spec depends on which file
// vitest happens to run first: busybox:latest (scripts/build-images.sh) and the wasm-* images
// (scripts/build-wasm-images.sh), both into .kts/test-images. Both scripts are idempotent (a stamp
// says when the layout is up to date). Where containers cannot run at all (not root, no runc), the
// specs skip with their own reason and nothing is built.
import { buildTestImages, canRunContainers } from './helpers/daemon.js';

export function setup(): void {
  if (canRunContainers() === undefined) buildTestImages();
}
