import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { REPO, writeYaml } from './daemon.js';

/** Where freshPodYaml writes: one directory per spec file (vitest loads this module once per file), removed after it. */
let podYamlDir: string | undefined;
afterAll(() => {
  if (podYamlDir) rmSync(podYamlDir, { recursive: true, force: true });
  podYamlDir = undefined;
});

/**
 * examples/pod.yaml with a uid of its own, for a test that runs the example pod more than once while
 * an earlier one lives: kts, like CRI, refuses a second live pod with the same metadata.
 */
export function freshPodYaml(): string {
  podYamlDir ??= mkdtempSync(path.join(tmpdir(), 'kts-pod-'));
  const dir = mkdtempSync(path.join(podYamlDir, 'pod-'));
  const text = readFileSync(path.join(REPO, 'examples/pod.yaml'), 'utf8').replace(/^(\s*uid:\s*).*$/m, `$1busybox-pod-uid-${randomBytes(4).toString('hex')}`);
  return writeYaml(dir, 'pod.yaml', text);
}
