// critest v1.37.0, the CRI validation suite, through kts and through containerd's own runc path, side by
// side (scripts/critest.mjs). The goal of issue 13: every spec that passes on containerd's own runc
// path passes through kts. This runs the script afresh and fails naming each spec that does not.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, canRunContainers } from './helpers/daemon.js';
import { PEERS_BIN } from './helpers/peers.js';

// One run of both handlers takes about 3 minutes here (test/critest/results.json: total_seconds); a
// StopPodSandbox that hangs costs critest 300 s a spec, so allow far more.
const RUN_TIMEOUT_MS = 20 * 60_000;

function whyNot(): string | undefined {
  const base = canRunContainers();
  if (base) return base;
  for (const binary of ['containerd', 'ctr', 'containerd-shim-runc-v2', 'crictl', 'critest']) {
    if (!existsSync(path.join(PEERS_BIN, binary))) return `needs the peers in ${PEERS_BIN} (bash scripts/build-peers.sh)`;
  }
  if (!existsSync('/usr/lib/cni/bridge')) return 'needs the CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)';
  return undefined;
}
const skip = whyNot();

interface Failure { spec: string; message?: string; location?: string }
interface Results {
  handlers: Record<string, { passed: number; failed: number; skipped: number; seconds: number }>;
  kts_only_failures: Failure[];
  specs: Record<string, Record<string, unknown>>;
}

describe.skipIf(skip)(`critest side by side: kts-runc against containerd's runc path${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const outDir = mkdtempSync(path.join(tmpdir(), 'kts-critest-'));
  afterAll(() => rmSync(outDir, { recursive: true, force: true }));

  it('passes through kts every spec that passes on containerd\'s own runc path', async () => {
    const out = path.join(outDir, 'results.json');
    const run = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile(process.execPath, [path.join(REPO, 'scripts/critest.mjs'), '--out', out], { timeout: RUN_TIMEOUT_MS, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, output: stdout + stderr });
      });
    });
    expect(existsSync(out), `scripts/critest.mjs wrote no results (exit ${run.code}):\n${run.output.slice(-2000)}`).toBe(true);
    const results = JSON.parse(readFileSync(out, 'utf8')) as Results;
    // Both suites really ran: a run that passes nothing proves nothing.
    expect(results.handlers['runc']?.passed ?? 0, 'containerd\'s own runc path passed no spec').toBeGreaterThan(0);
    expect(results.handlers['kts-runc']?.passed ?? 0, 'kts passed no spec').toBeGreaterThan(0);
    const listed = results.kts_only_failures.map((failure) => `- ${failure.spec}\n    ${(failure.message ?? '').split('\n')[0]} (${failure.location ?? ''})`);
    expect(listed, `specs that pass on containerd's runc path but fail through kts:\n${listed.join('\n')}`).toEqual([]);
  }, RUN_TIMEOUT_MS + 60_000);
});
