// Who caused an event: the uid, gid and pid the kernel gives for the caller's connection (SO_PEERCRED),
// never what the client claims (its user agent, the OS user kts sends), on the daemon's real socket.
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KTS_VERSION } from '../src/version.js';
import { parseCaller } from '../src/grpc/caller.js';
import { KTS, REPO, TestDaemon, canRunContainers } from './helpers/daemon.js';
import { controllerClient } from './helpers/protoClient.js';

const skip = canRunContainers();
const NOBODY = 65534;

/** A gRPC client of its own (grpc-js, the .proto files) that creates one sandbox: argv socket, sandbox id, user agent, kts-os-user. */
const CLIENT_SCRIPT = `
const [repo, socket, sandboxId, agent, osUser] = process.argv.slice(2);
const grpc = require(repo + '/node_modules/@grpc/grpc-js');
const loader = require(repo + '/node_modules/@grpc/proto-loader');
const pkg = grpc.loadPackageDefinition(loader.loadSync(repo + '/proto/containerd/services/sandbox/v1/sandbox.proto', { keepCase: true, includeDirs: [repo + '/proto'] }));
const client = new pkg.containerd.services.sandbox.v1.Controller('unix://' + socket, grpc.credentials.createInsecure(), agent ? { 'grpc.primary_user_agent': agent } : {});
const metadata = new grpc.Metadata();
if (osUser) metadata.set('kts-os-user', osUser);
client.Create({ sandbox_id: sandboxId, sandboxer: 'runc' }, metadata, (error) => {
  client.close();
  if (error) { console.error(error.message); process.exit(1); }
});
`;

/** Runs `argv` with node, as `uid` if given; resolves with its pid once it has exited 0. */
function runNode(argv: string[], options: { uid?: number; env?: Record<string, string> } = {}): Promise<{ pid: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const ids = options.uid === undefined ? {} : { uid: options.uid, gid: options.uid };
    const child = spawn(process.execPath, argv, { ...ids, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve({ pid: child.pid!, stdout }) : reject(new Error(`node ${argv.join(' ')} exited ${code}: ${stderr}`))));
  });
}

describe.skipIf(skip)(`the caller recorded on each event${skip ? ` (skipped: ${skip})` : ''}`, () => {
  // The socket's parent is open to all and its own directory to nogroup (socket_group), so uid 65534 reaches it.
  const socketParent = mkdtempSync(path.join(tmpdir(), 'kts-caller-'));
  const daemon = new TestDaemon('', { socket: path.join(socketParent, 'run', 'kts.sock'), topToml: 'socket_group = "nogroup"' });
  const clientScript = path.join(socketParent, 'client.js');

  beforeAll(async () => {
    chmodSync(socketParent, 0o755);
    writeFileSync(clientScript, CLIENT_SCRIPT, { mode: 0o644 });
    await daemon.start();
  });
  afterAll(async () => {
    await daemon.cleanup();
    rmSync(socketParent, { recursive: true, force: true });
  });

  const callers = (pod: string) => (JSON.parse(daemon.ktsOk('history', '--json', pod)) as { events: Array<{ type: string; caller: string }> }).events;

  it('records the kts CLI\'s real pid and uid 0, with its agent kts/<version> and the OS user it claims', async () => {
    const controller = controllerClient(daemon.socket);
    await controller.Create!({ sandbox_id: 'by-cli', sandboxer: 'runc' }).finally(() => controller.close());
    const cli = await runNode([KTS, 'rm', 'by-cli'], { env: { KTS_SOCKET: daemon.socket } });

    const [created, ...removal] = callers('by-cli');
    // This test process made the sandbox over its own connection: its pid, not the CLI's.
    expect(parseCaller(created!.caller).fields).toMatchObject({ uid: '0', gid: '0', pid: String(process.pid), comm: readFileSync('/proc/self/comm', 'utf8').trim() });
    expect(removal.length).toBeGreaterThan(0);
    for (const event of removal) {
      expect(event.caller).toMatch(/^grpc containerd\.services\.sandbox\.v1\.Controller\/Shutdown uid=/);
      expect(parseCaller(event.caller).fields).toMatchObject({ uid: '0', gid: '0', pid: String(cli.pid), comm: 'node', agent: `kts/${KTS_VERSION}`, user: 'root' });
    }
  });

  it('records a client running as another uid with that uid and its own pid, in the history table too', async () => {
    const client = await runNode([clientScript, REPO, daemon.socket, 'by-nobody'], { uid: NOBODY });
    const [created] = callers('by-nobody');
    const fields = parseCaller(created!.caller).fields;
    expect(fields).toMatchObject({ uid: String(NOBODY), gid: String(NOBODY), pid: String(client.pid), comm: 'node' });
    expect(fields.agent).toMatch(/^grpc-node-js\//);
    expect(fields).not.toHaveProperty('user');
    const row = daemon.ktsOk('history', 'by-nobody').split('\n').find((line) => line.includes('SandboxCreated'));
    expect(row).toContain(`grpc containerd.services.sandbox.v1.Controller/Create`);
    expect(row).toContain(`uid=${NOBODY} pid=${client.pid} node grpc-node-js/`);
  });

  it('believes no claim: a client posing as the kts CLI run by root is recorded with its own uid and pid', async () => {
    const forger = await runNode([clientScript, REPO, daemon.socket, 'forged', `kts/${KTS_VERSION} uid=0 pid=1`, 'root uid=0'], { uid: NOBODY });
    const [created] = callers('forged');
    expect(created!.caller.match(/ uid=/g)).toHaveLength(1);
    expect(parseCaller(created!.caller).fields).toMatchObject({
      uid: String(NOBODY), gid: String(NOBODY), pid: String(forger.pid), agent: `kts/${KTS_VERSION}`, user: 'root%20uid%3D0',
    });
    expect(daemon.ktsOk('history', 'forged')).toContain(`uid=${NOBODY} pid=${forger.pid} node kts/${KTS_VERSION}`);
  });
});
