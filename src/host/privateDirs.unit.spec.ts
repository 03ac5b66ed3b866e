import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ensurePrivateDir, restrictSocket } from './privateDirs.js';

// chown to another user needs root; so does a socket owned by a group we are not in.
const skip = process.getuid?.() === 0 ? undefined : 'needs root (chown)';
const modeOf = (file: string) => statSync(file).mode & 0o7777;

describe.skipIf(skip)(`private directories and the socket${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'kts-private-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates a missing directory and its parents 0700', async () => {
    const target = path.join(dir, 'a', 'b');
    expect(await ensurePrivateDir(target, 'state directory')).toMatchObject({ created: true });
    expect(modeOf(target)).toBe(0o700);
    expect(modeOf(path.join(dir, 'a'))).toBe(0o700);
  });

  it('tightens a looser directory it owns, and says from what', async () => {
    chmodSync(dir, 0o755);
    expect(await ensurePrivateDir(dir, 'state directory')).toEqual({ dir, created: false, tightenedFrom: 0o755 });
    expect(modeOf(dir)).toBe(0o700);
  });

  it('only reports a looser directory when asked not to tighten it', async () => {
    chmodSync(dir, 0o755);
    expect(await ensurePrivateDir(dir, 'socket directory', { tighten: false })).toEqual({ dir, created: false, leftLoose: 0o755 });
    expect(modeOf(dir)).toBe(0o755);
  });

  it('refuses a symbolic link (even to a good directory), a file, and a directory of another user', async () => {
    const real = path.join(dir, 'real');
    mkdirSync(real, { mode: 0o700 });
    symlinkSync(real, path.join(dir, 'link'));
    await expect(ensurePrivateDir(path.join(dir, 'link'), 'state directory')).rejects.toMatchObject({ kind: 'failed_precondition', message: expect.stringMatching(/is a symbolic link/) });
    writeFileSync(path.join(dir, 'file'), '');
    await expect(ensurePrivateDir(path.join(dir, 'file'), 'state directory')).rejects.toThrow(/is not a directory/);
    const foreign = path.join(dir, 'foreign');
    mkdirSync(foreign, { mode: 0o755 });
    chownSync(foreign, 65534, 65534);
    await expect(ensurePrivateDir(foreign, 'state directory')).rejects.toThrow(/is owned by uid 65534/);
    expect(modeOf(foreign)).toBe(0o755);
  });

  describe('the socket', () => {
    let server: Server;
    let socket: string;
    beforeEach(async () => {
      socket = path.join(dir, 'kts.sock');
      server = createServer();
      await new Promise<void>((resolve) => server.listen(socket, resolve));
    });
    afterEach(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('is 0600 without a group', async () => {
      await restrictSocket(socket, null, { socketDirIsOurs: true });
      expect(modeOf(socket)).toBe(0o600);
    });

    it('is 0660 owned by the configured group, by number or by name', async () => {
      await restrictSocket(socket, '65534', { socketDirIsOurs: false });
      expect([modeOf(socket), statSync(socket).gid]).toEqual([0o660, 65534]);
      expect(modeOf(dir)).toBe(0o700);
      const name = execFileSync('getent', ['group', '0'], { encoding: 'utf8' }).split(':')[0]!;
      await restrictSocket(socket, name, { socketDirIsOurs: false });
      expect(statSync(socket).gid).toBe(0);
    });

    it('opens a directory of ours to the group for passing through only (0710)', async () => {
      await restrictSocket(socket, '65534', { socketDirIsOurs: true });
      expect([modeOf(dir), statSync(dir).gid]).toEqual([0o710, 65534]);
    });

    it('refuses a group the host does not know', async () => {
      await expect(restrictSocket(socket, 'no-such-group-kts', { socketDirIsOurs: true })).rejects.toThrow(/socket_group "no-such-group-kts" is not a group/);
    });
  });
});
