// The host side of the trust boundary (SECURITY.md): the state root, database, socket and unpacked
// images are root's alone; a root that is someone else's or a symlink is refused; two daemons on one
// host keep to their own runc roots; UpdateResources takes only bounded, valid LinuxResources;
// configured annotation keys never reach the log; container logs are bounded by rotation.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KTS, TestDaemon, canRunContainers, isAlive, until, writeYaml } from './helpers/daemon.js';
import { adminClient, type ProtoClient } from './helpers/protoClient.js';

const skip = canRunContainers() ?? (spawnSync('setpriv', ['--version']).status === 0 ? undefined : 'needs setpriv (util-linux)');
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/** Runs argv as uid/gid 65534 with no supplementary groups. */
function asNobody(...argv: string[]): { code: number; output: string } {
  const result = spawnSync('setpriv', [...NOBODY, ...argv], { encoding: 'utf8' });
  return { code: result.status ?? 1, output: `${result.stdout}${result.stderr}` };
}

/** What an unprivileged user's connect() to the socket says: "connected" or the errno code. */
function nobodyConnects(socket: string): string {
  const probe = "const s=require('net').connect(process.argv[1]);s.on('connect',()=>{console.log('connected');process.exit(0)});s.on('error',(e)=>{console.log(e.code);process.exit(0)})";
  return asNobody(process.execPath, '-e', probe, socket).output.trim();
}

const modeOf = (file: string) => statSync(file).mode & 0o7777;

function podYaml(dir: string, name: string, extra = ''): string {
  return writeYaml(dir, `${name}-pod.yaml`, `metadata: { name: ${name}, namespace: default, uid: ${name}-uid }\n${extra}`);
}

function containerYaml(dir: string, name: string, script: string): string {
  return writeYaml(dir, `${name}-container.yaml`, `metadata: { name: ${name} }\nimage: { image: busybox:latest }\ncommand: ["sh", "-c"]\nargs: [${JSON.stringify(script)}]\n`);
}

function run(daemon: TestDaemon, name: string, script: string, podExtra = ''): { podId: string; containerId: string; pid: number } {
  const dir = daemon.root;
  return JSON.parse(daemon.ktsOk('run', '--json', podYaml(dir, name, podExtra), containerYaml(dir, name, script))) as { podId: string; containerId: string; pid: number };
}

describe.skipIf(skip)(`host state is private to root${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const socketParent = mkdtempSync(path.join(tmpdir(), 'kts-sock-'));
  const socketDir = path.join(socketParent, 'run');
  const daemon = new TestDaemon('', { socket: path.join(socketDir, 'kts.sock') });

  beforeAll(async () => {
    // As an older version left /var/lib/kts: 0755. And a careless umask, which the socket must not take.
    chmodSync(daemon.root, 0o755);
    chmodSync(socketParent, 0o755);
    const umask = process.umask(0);
    try {
      await daemon.start();
    } finally {
      process.umask(umask);
    }
  });
  afterAll(async () => {
    await daemon.cleanup();
    rmSync(socketParent, { recursive: true, force: true });
  });

  it('tightens a looser existing state root to 0700, and nobody can list it', () => {
    expect(modeOf(daemon.root)).toBe(0o700);
    const listing = asNobody('ls', daemon.root);
    expect(listing.code).not.toBe(0);
    expect(listing.output).toMatch(/Permission denied/);
  });

  it('creates the database, its WAL and the bundle files 0600, and nobody can open kts.db', () => {
    const { containerId, podId } = run(daemon, 'private-files', 'echo private; exec sleep 600');
    for (const file of [daemon.db, `${daemon.db}-wal`]) expect(modeOf(file).toString(8)).toBe('600');
    const bundle = path.join(daemon.root, 'bundles', podId, containerId);
    expect(modeOf(path.join(bundle, 'bundle', 'config.json')).toString(8)).toBe('600');
    expect(modeOf(path.join(bundle, 'container.log')).toString(8)).toBe('600');
    expect(asNobody('cat', daemon.db).code).not.toBe(0);
    // Happy path beside it: the owner (root) still uses all of it.
    expect(daemon.ktsOk('logs', containerId)).toContain('private');
  });

  it('cuts kts exec output at 1 MiB per stream instead of failing the call, and small output is whole', () => {
    const { containerId } = run(daemon, 'big-exec', 'exec sleep 600');
    const big = spawnSync(process.execPath, [KTS, 'exec', containerId, '--', 'sh', '-c', 'head -c 6000000 /dev/zero | tr "\\0" x'], {
      env: { ...process.env, KTS_SOCKET: daemon.socket }, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024,
    });
    expect(big.stderr).toBe('');
    expect(big.status).toBe(0);
    expect(big.stdout.length).toBe(1024 * 1024);
    expect(daemon.ktsOk('exec', containerId, '--', 'echo', 'small')).toBe('small\n');
  });

  it('the socket is 0600 in a 0700 directory even under umask 000, and nobody cannot connect', () => {
    expect(modeOf(daemon.socket).toString(8)).toBe('600');
    expect(modeOf(socketDir).toString(8)).toBe('700');
    expect(nobodyConnects(daemon.socket)).toMatch(/EACCES/);
    expect(daemon.ktsOk('pods')).toContain('private-files');
  });

  it('nobody cannot reach any file of an unpacked image (where a setuid binary would be)', () => {
    const busybox = findFile(daemon.root, 'busybox', 8);
    expect(busybox, 'an unpacked busybox under the state root').toBeDefined();
    expect(existsSync(busybox!)).toBe(true);
    const probe = asNobody('stat', busybox!);
    expect(probe.code).not.toBe(0);
    expect(probe.output).toMatch(/Permission denied/);
  });
});

describe.skipIf(skip)(`socket_group opens the socket to one group${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const socketParent = mkdtempSync(path.join(tmpdir(), 'kts-sock-'));
  const daemon = new TestDaemon('', { socket: path.join(socketParent, 'run', 'kts.sock'), topToml: 'socket_group = "65534"' });
  beforeAll(() => daemon.start());
  afterAll(async () => {
    await daemon.cleanup();
    rmSync(socketParent, { recursive: true, force: true });
  });

  it('lets a member of the group connect (0660 socket, 0710 directory) and nobody else', () => {
    expect([modeOf(daemon.socket), statSync(daemon.socket).gid]).toEqual([0o660, 65534]);
    expect(modeOf(path.dirname(daemon.socket))).toBe(0o710);
    chmodSync(socketParent, 0o755);
    expect(nobodyConnects(daemon.socket)).toBe('connected');
    const outsider = spawnSync('setpriv', ['--reuid=65534', '--regid=100', '--clear-groups', process.execPath, '-e',
      "const s=require('net').connect(process.argv[1]);s.on('connect',()=>{console.log('connected');process.exit(0)});s.on('error',(e)=>{console.log(e.code);process.exit(0)})", daemon.socket], { encoding: 'utf8' });
    expect(outsider.stdout.trim()).toBe('EACCES');
  });
});

/** Depth-limited search as root for a regular file named `name`. */
function findFile(dir: string, name: string, depth: number): string | undefined {
  if (depth < 0) return undefined;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isFile() && entry.name === name) return full;
    if (entry.isDirectory() && !entry.isSymbolicLink()) {
      const found = findFile(full, name, depth - 1);
      if (found) return found;
    }
  }
  return undefined;
}

describe.skipIf(skip)(`the daemon refuses a state root it cannot keep private${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const made: TestDaemon[] = [];
  const others: string[] = [];
  afterEach(async () => {
    for (const daemon of made.splice(0)) await daemon.cleanup();
    for (const dir of others.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a root owned by another user, with one line naming it and a non-zero exit', async () => {
    const daemon = new TestDaemon();
    made.push(daemon);
    chownSync(daemon.root, 65534, 65534);
    const { code, output } = await daemon.startExpectingFailure();
    expect(code).not.toBe(0);
    expect(output).toMatch(/^kts: state directory \(root\) .* is owned by uid 65534/m);
    expect(existsSync(daemon.socket)).toBe(false);
  });

  it('refuses a root that is a symbolic link', async () => {
    const real = mkdtempSync(path.join(tmpdir(), 'kts-real-root-'));
    const link = `${real}-link`;
    symlinkSync(real, link);
    others.push(real, link);
    const daemon = new TestDaemon('', { stateRoot: link });
    made.push(daemon);
    const { code, output } = await daemon.startExpectingFailure();
    expect(code).not.toBe(0);
    expect(output).toMatch(/^kts: state directory \(root\) .* is a symbolic link/m);
  });

  it('starts with a root it creates itself, 0700', async () => {
    const parent = mkdtempSync(path.join(tmpdir(), 'kts-new-root-'));
    others.push(parent);
    const daemon = new TestDaemon('', { stateRoot: path.join(parent, 'state', 'kts') });
    made.push(daemon);
    await daemon.start();
    expect(modeOf(path.join(parent, 'state', 'kts')).toString(8)).toBe('700');
  });
});

describe.skipIf(skip)(`two daemons with default runc roots${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const first = new TestDaemon('', { defaultRuncRoot: true });
  const second = new TestDaemon('', { defaultRuncRoot: true });
  afterAll(async () => {
    await second.cleanup();
    await first.cleanup();
  });

  it('never sweep each other\'s containers', async () => {
    await first.start();
    const { containerId, pid } = run(first, 'first-daemon', 'exec sleep 600');
    expect(isAlive(pid)).toBe(true);
    // The second daemon's start runs recovery, whose orphan sweep removes containers no record of its own owns.
    await second.start();
    const { containerId: secondId, pid: secondPid } = run(second, 'second-daemon', 'exec sleep 600');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(isAlive(pid)).toBe(true);
    expect(isAlive(secondPid)).toBe(true);
    const states = JSON.parse(first.ktsOk('ps', '--json')) as Array<{ id: string; state: string }>;
    expect(states.find((c) => c.id === containerId)?.state).toBe('running');
    expect(second.logs).not.toContain(containerId);
    expect(existsSync(path.join(first.root, 'runc', containerId))).toBe(true);
    expect(existsSync(path.join(second.root, 'runc', secondId))).toBe(true);
  });
});

describe.skipIf(skip)(`UpdateResources takes only bounded, valid LinuxResources${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let admin: ProtoClient;
  let podId: string;
  let containerId: string;
  const eventCount = () => (JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: unknown[] }).events.length;

  beforeAll(async () => {
    await daemon.start();
    admin = adminClient(daemon.socket);
    ({ podId, containerId } = run(daemon, 'resources', 'exec sleep 600'));
  });
  afterAll(async () => {
    admin?.close();
    await daemon.cleanup();
  });

  it('refuses a body over 64 KiB and records nothing', async () => {
    const before = eventCount();
    const huge = JSON.stringify({ unified: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`memory.x${i}`, 'y'.repeat(1000)])) });
    await expect(admin.UpdateResources!({ sandbox_id: podId, container_id: containerId, resources_json: huge })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/limit is 65536/) });
    const sevenMegabytes = JSON.stringify({ padding: 'x'.repeat(7 * 1024 * 1024) });
    await expect(admin.UpdateResources!({ sandbox_id: podId, resources_json: sevenMegabytes })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    expect(eventCount()).toBe(before);
  });

  it('refuses unknown fields and wrong types, naming the field, and records nothing', async () => {
    const before = eventCount();
    for (const [body, named] of [
      [{ memory: { limit: 'lots' } }, /resources_json\.memory\.limit/],
      [{ secrets: { token: 'x' } }, /unknown field "secrets"/],
      [{ cpu: { shares: -5 } }, /resources_json\.cpu\.shares/],
      [{ devices: [{ allow: true, access: 'rwx' }] }, /resources_json\.devices\[0\]\.access/],
    ] as const) {
      await expect(admin.UpdateResources!({ sandbox_id: podId, container_id: containerId, resources_json: JSON.stringify(body) }))
        .rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(named) });
    }
    expect(eventCount()).toBe(before);
  });

  it('records a valid LinuxResources as it was sent', async () => {
    const resources = { memory: { limit: 64 << 20, swappiness: 10 }, cpu: { quota: 50000, period: 100000, cpus: '0-1' }, pids: { limit: 100 } };
    await admin.UpdateResources!({ sandbox_id: podId, container_id: containerId, resources_json: JSON.stringify(resources) });
    const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ type: string; payload: { resources?: unknown } }> };
    expect(history.events.filter((e) => e.type === 'ContainerUpdated').at(-1)?.payload.resources).toEqual(resources);
  });
});

describe.skipIf(skip)(`[audit] redact_annotations and redact_labels${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon('[audit]\nredact_annotations = ["secret.example/token", "vault.example/*"]\nredact_labels = ["password"]');
  afterAll(() => daemon.cleanup());

  it('keeps the configured values out of kts history, kts inspect and the database file; others stay', async () => {
    await daemon.start();
    const pod = [
      'labels: { app: redaction-demo, password: "label-hunter2-SECRET" }',
      'annotations:',
      '  secret.example/token: "token-hunter2-SECRET"',
      '  vault.example/db: "vault-hunter2-SECRET"',
      '  example.kts.io/purpose: kept-in-the-log',
    ].join('\n');
    const { podId } = run(daemon, 'redacted', 'exec sleep 600', `${pod}\n`);
    const history = daemon.ktsOk('history', '--json', podId);
    const inspect = daemon.ktsOk('inspect', podId);
    for (const text of [history, inspect]) {
      expect(text).not.toContain('hunter2');
      expect(text).toContain('kept-in-the-log');
      expect(text).toContain('<redacted>');
    }
    const bytes = Buffer.concat([daemon.db, `${daemon.db}-wal`].filter(existsSync).map((file) => readFileSync(file)));
    expect(bytes.includes('hunter2')).toBe(false);
    expect(bytes.includes('kept-in-the-log')).toBe(true);
  });
});

describe.skipIf(skip)(`container logs are bounded by [logs] max_bytes${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const maxBytes = 64 * 1024;
  const daemon = new TestDaemon(`[logs]\nmax_bytes = ${maxBytes}\nrotate_interval_seconds = 1`);
  beforeAll(() => daemon.start());
  afterAll(() => daemon.cleanup());

  it('keeps container.log and container.log.1 at most max_bytes each, and kts logs still shows the newest output', async () => {
    // About 1.3 MB in 40 000 lines, written over a few seconds, then quiet.
    const script = 'i=0; while [ $i -lt 40000 ]; do echo "line $i of output that should not grow forever"; i=$((i+1)); done; echo done-writing; exec sleep 600';
    const { podId, containerId } = run(daemon, 'chatty', script);
    const dir = path.join(daemon.root, 'bundles', podId, containerId);
    const log = path.join(dir, 'container.log');
    await until('the last line', () => readFileSync(log, 'utf8').includes('done-writing') || (existsSync(`${log}.1`) && readFileSync(`${log}.1`, 'utf8').includes('done-writing')), 60_000);
    await until('a rotation pass after the writer stopped', () => statSync(log).size <= maxBytes, 10_000);
    expect(statSync(`${log}.1`).size).toBeLessThanOrEqual(maxBytes);
    const logs = daemon.ktsOk('logs', containerId);
    expect(logs).toContain('done-writing');
    expect(logs).toContain('line 39999 of output');
    expect(logs).not.toContain('line 0 of output');
    expect(Buffer.byteLength(logs)).toBeLessThanOrEqual(2 * maxBytes);
  });

  it('kts logs -f follows a log across rotations to the container\'s last line', async () => {
    const script = 'i=0; while [ $i -lt 4000 ]; do echo "follow line $i with some padding to fill the log"; i=$((i+1)); [ $((i % 200)) -eq 0 ] && sleep 0.2; done; echo final-line';
    const { containerId, podId } = run(daemon, 'followed', script);
    const followed = await daemon.ktsAsync('logs', '-f', containerId);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toContain('follow line 0 with');
    expect(followed.stdout.trimEnd().endsWith('final-line')).toBe(true);
    expect(existsSync(path.join(daemon.root, 'bundles', podId, containerId, 'container.log.1'))).toBe(true);
  });

  it('leaves a small log alone: every line is there', () => {
    const { containerId } = run(daemon, 'quiet', 'for i in 1 2 3; do echo "quiet line $i"; done; exec sleep 600');
    return until('three lines', () => daemon.ktsOk('logs', containerId).includes('quiet line 3')).then(() => {
      expect(daemon.ktsOk('logs', containerId)).toBe('quiet line 1\nquiet line 2\nquiet line 3\n');
    });
  });
});
