import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { ImageStore } from '../images/imageStore.js';
import type { OciSpec } from '../oci/containerSpec.js';
import { ContainerBundles } from './bundles.js';
import { CONTAINER_PID, META, givenClosedAfterEach, readySandbox, runningContainer, settle, type EngineSpecification } from './engine.testkit.js';

// The containers kts makes itself, over the engine specs' real SQLite file and fake backend, in a temp root.
const given = givenClosedAfterEach();
const roots: string[] = [];
afterEach(() => roots.splice(0).forEach((dir) => rmSync(dir, { recursive: true, force: true })));

const SPEC = { ociVersion: '1.0.2', process: { args: ['sleep', '60'], cwd: '/' }, root: { path: 'rootfs' } } as unknown as OciSpec;

async function bundlesOver(spec: EngineSpecification) {
  const rootDir = mkdtempSync(path.join(tmpdir(), 'kts-bundles-'));
  roots.push(rootDir);
  // Prepare, stop and remove read no image: the image store is not asked.
  const bundles = new ContainerBundles({ engine: await spec.engine(), images: {} as ImageStore, rootDir, logger: pino({ level: 'silent' }) });
  return { bundles, rootDir };
}

describe('Prepare (a bundle from the caller\'s spec)', () => {
  it('writes config.json and an empty log, root only, in the container\'s own directory, and records its creation', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') } });
    const { bundles, rootDir } = await bundlesOver(spec);
    await spec.when(() => bundles.prepare({ sandboxId: 'p1', containerId: 'c1', spec: SPEC, rootfsMounts: [] }, META));
    spec.thenEvents([['container-c1', 'ContainerCreateRequested'], ['container-c1', 'ContainerCreated']])
      .thenResult({ bundle: path.join(rootDir, 'bundles', 'p1', 'c1', 'bundle') });
    const dir = bundles.dir('p1', 'c1');
    expect(JSON.parse(readFileSync(path.join(dir, 'bundle', 'config.json'), 'utf8')).process.args).toEqual(['sleep', '60']);
    expect(statSync(path.join(dir, 'bundle', 'config.json')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(dir, 'container.log')).mode & 0o777).toBe(0o600);
  });

  it('refuses an id a live container holds, leaving that container\'s bundle as it was', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') }, containers: { c1: runningContainer('c1', 'p1') } });
    const { bundles } = await bundlesOver(spec);
    const config = path.join(bundles.dir('p1', 'c1'), 'bundle', 'config.json');
    mkdirSync(path.dirname(config), { recursive: true });
    writeFileSync(config, 'the live one');
    await spec.when(() => bundles.prepare({ sandboxId: 'p1', containerId: 'c1', spec: SPEC, rootfsMounts: [] }, META));
    spec.thenError('already_exists', /container c1 already exists/);
    expect(readFileSync(config, 'utf8')).toBe('the live one');
  });

  it('refuses an id that would leave <root>/bundles (a hostile "../" id), writing nothing', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') } });
    const { bundles, rootDir } = await bundlesOver(spec);
    await spec.when(() => bundles.prepare({ sandboxId: 'p1', containerId: '../../escaped', spec: SPEC, rootfsMounts: [] }, META));
    spec.thenError('invalid_argument', /container id/);
    expect(existsSync(path.join(rootDir, 'escaped'))).toBe(false);
    expect(existsSync(path.join(rootDir, 'bundles'))).toBe(false);
  });

  it('keeps a failed container\'s bundle until it is deleted, then removes it', async () => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') } });
    const { bundles } = await bundlesOver(spec);
    const stop = bundles.removeWhenDeleted();
    spec.sandboxer.failures.set('createContainer', new Error('runc create: exit status 1'));
    await spec.when(() => bundles.prepare({ sandboxId: 'p1', containerId: 'c1', spec: SPEC, rootfsMounts: [] }, META));
    spec.thenError('any', /runc create/, [['container-c1', 'ContainerCreateRequested'], ['container-c1', 'ContainerCreateFailed']]);
    expect(existsSync(path.join(bundles.dir('p1', 'c1'), 'bundle', 'config.json'))).toBe(true);
    await (await spec.engine()).deleteContainer('c1', META);
    await settle();
    expect(existsSync(bundles.dir('p1', 'c1'))).toBe(false);
    stop();
  });
});

describe('stop (kts stop)', () => {
  it.each([
    ['with a timeout, sends SIGTERM, and answers the exit status once the container exits within it', 30, 15, 143],
    ['with no timeout, kills at once with SIGKILL', 0, 9, 137],
  ])('%s', async (_name, timeoutSecs, signal, exitStatus) => {
    const spec = given({ sandboxes: { p1: readySandbox('p1') }, containers: { c1: runningContainer('c1', 'p1') } });
    spec.sandboxer.containerStatuses.set('c1', { state: 'running', pid: CONTAINER_PID });
    const { bundles } = await bundlesOver(spec);
    const stopped = spec.when(() => bundles.stop('c1', timeoutSecs, META));
    await settle();
    spec.sandboxer.end(String(CONTAINER_PID), { exitStatus, exitedAt: new Date() });
    (await stopped).thenResult(exitStatus);
    expect(spec.sandboxer.calls.filter((call) => call.method === 'killContainer').map((call) => call.args[2])).toEqual([signal]);
  });
});
