import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chooseOciRuntime, describeOciRuntime, ociRuntimeName } from './ociRuntime.js';
import { RuncCli } from './runcCli.js';

const BINARIES = { crun: '/usr/bin/crun', runc: '/kts/agent/runc' };

describe('chooseOciRuntime (the guest agent\'s OCI runtime)', () => {
  const withCrun = () => true;
  const withoutCrun = () => false;

  it('given auto (or nothing), then crun when the image has it, else runc', () => {
    expect(chooseOciRuntime('auto', BINARIES, withCrun)).toEqual({ name: 'crun', binary: '/usr/bin/crun' });
    expect(chooseOciRuntime(undefined, BINARIES, withCrun)).toEqual({ name: 'crun', binary: '/usr/bin/crun' });
    expect(chooseOciRuntime('auto', BINARIES, withoutCrun)).toEqual({ name: 'runc', binary: '/kts/agent/runc' });
  });

  it('given runc, then runc even where crun is there', () => {
    expect(chooseOciRuntime('runc', BINARIES, withCrun)).toEqual({ name: 'runc', binary: '/kts/agent/runc' });
  });

  it('given crun where it is missing, or a name it does not know, then runc, saying why', () => {
    expect(chooseOciRuntime('crun', BINARIES, withoutCrun)).toMatchObject({ name: 'runc', fallback: expect.stringContaining('/usr/bin/crun is not there') });
    expect(chooseOciRuntime('youki', BINARIES, withCrun)).toMatchObject({ name: 'runc', fallback: expect.stringContaining('unknown OCI runtime "youki"') });
  });
});

describe('an OCI runtime binary, as kts drives it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-oci-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  /** A stand-in `crun` that answers every command as crun 1.8.1 does for a container it has no state for. */
  const fakeCrun = path.join(dir, 'crun');
  writeFileSync(fakeCrun, '#!/bin/sh\nif [ "$1" = --version ]; then echo "crun version 1.8.1"; echo "commit: f8a096be"; exit 0; fi\necho "error opening file \\`$3/$5/status\\`: No such file or directory" >&2\nexit 1\n');
  chmodSync(fakeCrun, 0o755);

  it('is named by its file name, and described with its version', async () => {
    expect(ociRuntimeName('/usr/bin/crun')).toBe('crun');
    expect(ociRuntimeName('/usr/sbin/runc')).toBe('runc');
    expect(await describeOciRuntime(fakeCrun)).toBe('crun 1.8.1');
    expect(await describeOciRuntime(path.join(dir, 'not-there'))).toBe('runc');
  });

  it('given crun\'s wording for an unknown container, then state is "none", delete is quiet and kill is NOT_FOUND', async () => {
    const cli = new RuncCli(fakeCrun, path.join(dir, 'root'));
    expect(cli.name).toBe('crun');
    expect(await cli.state('c1')).toBeUndefined();
    await expect(cli.forceDelete('c1')).resolves.toBeUndefined();
    await expect(cli.kill('c1', 9, false)).rejects.toMatchObject({ kind: 'not_found' });
  });
});
