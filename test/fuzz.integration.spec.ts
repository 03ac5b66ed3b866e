// API fuzzing (issue 15, item 4): every method of the Controller, Task v3 and v2 and Admin services gets
// generated and mutated requests (test/fuzz/fuzzer.ts) from a seeded PRNG, in batches, several at once,
// the same ids over and over. After each batch: the daemon lives, every reply was a well-formed status
// within its deadline, the host matches the records both ways, the hash chain verifies, and nothing
// outside the fuzz's own directory changed. KTS_FUZZ_CALLS (default 15,000) and KTS_FUZZ_SEED (default:
// random, printed) set the run; scripts/fuzz.sh is the long run by hand. To chase a finding:
// KTS_FUZZ_TRACE=<id> prints every call whose request names it, KTS_FUZZ_DEBUG=1 every scripted reply and,
// when the host and the records disagree, the batch's events. Inputs that once broke the daemon are the
// named cases at the end. The Task API is fuzzed once more over ttrpc (the address Start gives containerd),
// with hostile framing besides: KTS_FUZZ_TTRPC_FRAMES (default 3,000) frames, the same seed.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { TestDaemon, canRunContainers, isAlive, mountsUnder, until } from './helpers/daemon.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';
import { MAX_STATUS_MESSAGE_CHARS } from '../src/grpc/grpcErrors.js';
import { taskTtrpcSocket } from '../src/api/ttrpcServer.js';
import { MessageFactory, Prng, RawClient, loadMethods, preparePlaces, type CallOutcome, type FuzzMethod, type FuzzPlaces, type FuzzState } from './fuzz/fuzzer.js';
import { TTRPC_HEADER_BYTES, TTRPC_MAX_BODY_BYTES, TTRPC_REQUEST, TTRPC_RESPONSE, TtrpcConnection, frame, requestBody, ttrpcCall, type TtrpcReply } from './fuzz/ttrpcClient.js';

const skip = canRunContainers();
const CALLS = Number(process.env.KTS_FUZZ_CALLS ?? 15_000);
const BATCH = Number(process.env.KTS_FUZZ_BATCH ?? 200);
const SEED = Number(process.env.KTS_FUZZ_SEED ?? randomBytes(4).readUInt32LE(0));
const CONCURRENCY = 8;
/** A request takes 3–8 ms here; the long run by hand must not hit vitest's default timeout. */
const TEST_TIMEOUT_MS = 120_000 + CALLS * 30;
/** Every call answers within this; a slower one is a hang. */
const CALL_DEADLINE_MS = 30_000;
/** Calls that may rightly wait for a process (Wait, a sleeping exec, a stop with a long timeout) are cut here. */
const WAITING_DEADLINE_MS = 4_000;
const WAITING = new Set(['Wait', 'Exec@kts.admin.v1.Admin', 'Stop@containerd.services.sandbox.v1.Controller', 'StopContainer', 'RunContainer']);
const TRANSITIONAL = new Set(['starting', 'stopping', 'shuttingDown', 'creating', 'deleting']);
/** The ttrpc part: KTS_FUZZ_TTRPC_FRAMES frames (default 3,000) on this many connections at once, besides a saboteur's. */
const TTRPC_FRAMES = Number(process.env.KTS_FUZZ_TTRPC_FRAMES ?? 3_000);
const TTRPC_CONNECTIONS = 6;
/** The ttrpc part's pod ids (fz<generation>-a…) start here: far from the gRPC part's batches, whose ids stay taken. */
const TTRPC_GENERATION = 90_000;

/** What Node and V8 say when code meets input nobody validated (found once: a NUL byte reaching spawn's arguments). */
const JS_ERROR = /^The argument '|\bERR_[A-Z_]{4,}\b|Cannot read properties of|is not a function|is not iterable|Maximum call stack/;

const isWaiting = (method: FuzzMethod) => WAITING.has(method.name) || WAITING.has(`${method.name}@${method.service}`);

/** What is wrong with one reply, or undefined: a status code outside gRPC's, an error without a message, UNKNOWN, a stack trace, a hang, a reply that does not decode. */
function problemWith(method: FuzzMethod, outcome: CallOutcome): string | undefined {
  if (!Number.isInteger(outcome.code) || outcome.code < 0 || outcome.code > 16) return `status code ${outcome.code}`;
  if (outcome.badReply) return `reply does not decode: ${outcome.badReply}`;
  if (outcome.code === status.OK) return undefined;
  if (outcome.code === status.CANCELLED && method.serverStreaming) return undefined;
  if (outcome.code === status.DEADLINE_EXCEEDED) return method.serverStreaming || isWaiting(method) ? undefined : `no answer in ${CALL_DEADLINE_MS} ms`;
  if (!outcome.details) return `status ${status[outcome.code]} without a message`;
  if (outcome.code === status.UNKNOWN) return `UNKNOWN: ${outcome.details}`;
  if (/\n\s+at /.test(outcome.details)) return `a stack trace in ${status[outcome.code]}: ${outcome.details}`;
  if (JS_ERROR.test(outcome.details)) return `a JavaScript error, not a validated refusal, in ${status[outcome.code]}: ${outcome.details}`;
  if (outcome.code === status.UNAVAILABLE) return `UNAVAILABLE: ${outcome.details}`;
  return undefined;
}

/** A frame the ttrpc fuzz sent on one stream: whether the server must answer it, and with which code if it must be a refusal. */
interface SentFrame {
  streamId: number;
  kind: string;
  method?: FuzzMethod;
  mustReply: boolean;
  expectCode?: number;
  request?: unknown;
}

/** A connection's stream ids as a ttrpc client allots them: odd and rising; `hostile` gives zero, even, reused or the largest. */
class StreamIds {
  private last = -1;
  next(): number {
    this.last += 2;
    return this.last;
  }
  hostile(rng: Prng): number {
    const last = Math.max(1, this.last);
    return rng.pick([0, last, last + 1, 2, 0xfffffffe, 0xffffffff]);
  }
}

const NO_METHOD: FuzzMethod = { service: '', name: '', path: '', serverStreaming: false } as FuzzMethod;

/** What is wrong with one ttrpc Response: problemWith's checks on its status, and an OK one must decode as the method's reply. */
function ttrpcProblem(reply: TtrpcReply, method: FuzzMethod | undefined, expectCode?: number): string | undefined {
  // As over gRPC (grpcErrors.ts): a refusal quoting a huge request field is cut, here to fit ttrpc's 4 MiB frame.
  if (reply.message.length > MAX_STATUS_MESSAGE_CHARS + 100) return `a status message of ${reply.message.length} characters: ${reply.message.slice(0, 100)}…`;
  if (expectCode !== undefined && reply.code !== expectCode) return `status ${status[reply.code] ?? reply.code}, not ${status[expectCode]}: ${reply.message.slice(0, 300)}`;
  const outcome: CallOutcome = { method: method?.path ?? '', how: 'ttrpc', code: reply.code, details: reply.message, ms: 0 };
  if (reply.code === status.OK && method) {
    try {
      method.responseType.decode(reply.payload);
    } catch (error) {
      outcome.badReply = String(error);
    }
  }
  return problemWith(method ?? NO_METHOD, outcome);
}

/** Files and directories under `dir`, with their content or link target and mode, for "nothing changed". */
function snapshot(dir: string): string {
  const lines: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = path.join(d, name);
      const stat = lstatSync(full);
      lines.push(`${full} ${stat.mode.toString(8)} ${stat.isFile() ? readFileSync(full, 'latin1') : ''}`);
      if (stat.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return lines.join('\n');
}

function makeCanary(): string {
  const canary = path.join(tmpdir(), `kts-fuzz-canary-${process.pid}-${randomBytes(3).toString('hex')}`);
  mkdirSync(path.join(canary, 'sub'), { recursive: true });
  writeFileSync(path.join(canary, 'a.txt'), 'canary a\n');
  writeFileSync(path.join(canary, 'sub', 'b.txt'), 'canary b\n');
  return canary;
}

/** The fuzz's specs put containers under the cgroup /kts-fuzz; runc removes a container's own cgroup, not the parents. */
function removeFuzzCgroups(): void {
  for (const hierarchy of existsSync('/sys/fs/cgroup') ? readdirSync('/sys/fs/cgroup') : []) {
    const top = path.join('/sys/fs/cgroup', hierarchy, 'kts-fuzz');
    if (!existsSync(top)) continue;
    // Deepest first; rmdir of a cgroup that still has processes fails, and that one stays.
    const dirs = execFileSync('find', [top, '-depth', '-type', 'd'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    for (const dir of dirs) {
      try {
        rmdirSync(dir);
      } catch {
        // busy: another run's container is still in it
      }
    }
  }
}

function podProcessOwners(root: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' }).split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && m[3]!.includes(`kts-sandbox-init --dir ${path.join(root, 'sandboxes')}/`));
  const pids = new Set(out.map((m) => m[1]));
  return out.filter((m) => !pids.has(m[2])).map((m) => /--dir \S+\/sandboxes\/(\S+)/.exec(m[3]!)![1]!);
}

/** The two-sided invariant, from the store file read-only: the host's pod processes, dirs, runc containers and mounts belong to live records; each ready pod has its process. */
function hostMismatches(daemon: TestDaemon): string[] {
  const db = new Database(daemon.db, { readonly: true, fileMustExist: true });
  let sandboxes: Array<{ id: string; state: string }>;
  let containers: Array<{ id: string; state: string; bundleDir: string | null }>;
  try {
    sandboxes = db.prepare(`SELECT id, state FROM sandboxes WHERE state NOT IN ('removed', 'absent')`).all() as typeof sandboxes;
    containers = db.prepare(`SELECT id, state, json_extract(metadata, '$.bundleDir') AS bundleDir FROM containers WHERE state NOT IN ('deleted', 'absent')`).all() as typeof containers;
  } finally {
    db.close();
  }
  const problems: string[] = [];
  const live = new Set(sandboxes.map((s) => s.id));
  const holding = new Set(sandboxes.filter((s) => s.state === 'ready' || s.state === 'unhealthy').map((s) => s.id));
  const liveContainers = new Set(containers.map((c) => c.id));
  for (const record of [...sandboxes, ...containers]) if (TRANSITIONAL.has(record.state)) problems.push(`${record.id} is still ${record.state}`);
  const owners = podProcessOwners(daemon.root);
  for (const owner of owners) if (!holding.has(owner)) problems.push(`pod process of ${owner}, whose record is ${sandboxes.find((s) => s.id === owner)?.state ?? 'gone'}`);
  for (const sandbox of sandboxes.filter((s) => s.state === 'ready')) {
    const count = owners.filter((owner) => owner === sandbox.id).length;
    if (count !== 1) problems.push(`ready pod ${sandbox.id} has ${count} processes`);
  }
  for (const dir of ['sandboxes', 'vms', 'bundles']) {
    const full = path.join(daemon.root, dir);
    for (const entry of existsSync(full) ? readdirSync(full) : []) if (!live.has(entry)) problems.push(`${full}/${entry} has no live pod (it holds ${execFileSync('find', [path.join(full, entry)], { encoding: 'utf8' }).split('\n').slice(1, 12).join(' ')})`);
  }
  const runcIds = execFileSync('runc', ['--root', daemon.runcRoot, 'list', '-q'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const id of runcIds) if (!liveContainers.has(id)) problems.push(`runc container ${id} has no live record`);
  const ids = [...live, ...liveContainers];
  // A Task Create's bundle is the caller's (here under the fuzz's directory, beneath the root): its rootfs mount is named by no id.
  const bundles = containers.flatMap((c) => (c.bundleDir ? [`${c.bundleDir}/`] : []));
  for (const mount of mountsUnder(daemon.root)) {
    if (!ids.some((id) => mount.split('/').includes(id)) && !bundles.some((bundle) => mount.startsWith(bundle))) problems.push(`mount ${mount} has no live record`);
  }
  return problems;
}

describe.skipIf(skip)(`API fuzzing: random and mutated requests to every method never break the daemon${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let canary: string;
  let canaryBefore: string;
  let places: FuzzPlaces;
  let raw: RawClient;
  let controller: ProtoClient;
  let admin: ProtoClient;

  beforeAll(async () => {
    await daemon.start();
    canary = makeCanary();
    canaryBefore = snapshot(canary);
    const work = path.join(daemon.root, 'fuzz');
    places = preparePlaces(work, canary, busyboxRootfs(path.join(work, 'image')), daemon.root);
    raw = new RawClient(daemon.socket);
    controller = controllerClient(daemon.socket);
    admin = adminClient(daemon.socket);
  });
  afterAll(async () => {
    raw?.close();
    controller?.close();
    admin?.close();
    await daemon.cleanup();
    removeFuzzCgroups();
    if (canary) rmSync(canary, { recursive: true, force: true });
  });

  /** Removes every pod through the API, then checks the host holds nothing of them. */
  async function removeEverything(): Promise<void> {
    for (const sandbox of (await admin.ListSandboxes!({})).sandboxes as Array<{ id: string }>) {
      await controller.Shutdown!({ sandbox_id: sandbox.id }).catch((error: { code?: number }) => expect(error.code).toBe(status.NOT_FOUND));
    }
    expect((await admin.ListSandboxes!({})).sandboxes).toEqual([]);
    expect(mountsUnder(daemon.root)).toEqual([]);
    expect(execFileSync('runc', ['--root', daemon.runcRoot, 'list', '-q'], { encoding: 'utf8' }).trim()).toBe('');
    expect(podProcessOwners(daemon.root)).toEqual([]);
    const sandboxesDir = path.join(daemon.root, 'sandboxes');
    expect(existsSync(sandboxesDir) ? readdirSync(sandboxesDir) : []).toEqual([]);
  }

  async function expectBatchLeftAConsistentDaemon(batch: number | string): Promise<void> {
    expect(isAlive(daemon.process!.pid!), `daemon alive after batch ${batch}\n${daemon.logs.slice(-4000)}`).toBe(true);
    // A container that exits on its own moves its record a moment later: the host and the store agree within seconds.
    let mismatches: string[] = [];
    await until('the host to match the records', () => (mismatches = hostMismatches(daemon)).length === 0, 20_000).catch(() => undefined);
    if (mismatches.length > 0 && process.env.KTS_FUZZ_DEBUG) {
      const db = new Database(daemon.db, { readonly: true });
      console.log((db.prepare(`SELECT stream_id, type, time, caller, payload AS payload_json FROM events WHERE stream_id LIKE ? ORDER BY sequence`).all(`%fz${batch}-%`) as Array<Record<string, string>>).map((e) => `${e.time} ${e.stream_id} ${e.type} ${e.caller} ${e.payload_json!.slice(0, 150)}`).join('\n'));
      db.close();
    }
    const warnings = () => daemon.logs.split('\n').filter((line) => /"level":(40|50|"warn"|"error")|WARN|ERROR/.test(line)).slice(-15).map((line) => line.slice(0, 600)).join('\n');
    expect(mismatches, `host vs records after batch ${batch} (seed ${SEED}); the daemon's last warnings:\n${warnings()}`).toEqual([]);
    const verified = await admin.Verify!({});
    expect(verified.ok, `hash chain after batch ${batch}: ${verified.reason}`).toBe(true);
    expect(snapshot(canary), `the canary outside the fuzz's directory after batch ${batch}`).toBe(canaryBefore);
  }

  it(`survives ${CALLS} fuzzed calls (seed ${SEED}), in batches of ${BATCH}`, async () => {
    console.log(`kts fuzz: seed ${SEED}, ${CALLS} calls, batches of ${BATCH} (KTS_FUZZ_SEED=${SEED} reproduces the requests; timing decides their interleaving)`);
    const methods = loadMethods();
    expect(methods.length).toBeGreaterThan(40);
    const rng = new Prng(SEED);
    const state: FuzzState = { sandboxPids: new Map() };
    const factory = new MessageFactory(rng, places, state);
    const findings: string[] = [];
    const codes = new Map<string, number>();
    /** INTERNAL replies with a plain message: printed at the end, to judge case by case. */
    const internals = new Set<string>();
    const started = Date.now();
    let sent = 0;
    /** Every call made: the requests, their duplicates, and each step of a pod's scripted life. */
    let calls = 0;

    const callOnce = async (method: FuzzMethod, bytes: Buffer, how: string, request?: Record<string, unknown>) => {
      calls++;
      const outcome = method.serverStreaming
        ? await raw.stream(method, bytes, how, rng.int(500), CALL_DEADLINE_MS)
        : await raw.unary(method, bytes, how, isWaiting(method) ? WAITING_DEADLINE_MS : CALL_DEADLINE_MS);
      const key = `${method.service.split('.').slice(-2).join('.')}/${method.name} ${status[outcome.code] ?? outcome.code}`;
      codes.set(key, (codes.get(key) ?? 0) + 1);
      if (process.env.KTS_FUZZ_TRACE && JSON.stringify(request ?? {}).includes(process.env.KTS_FUZZ_TRACE)) {
        console.log(`TRACE ${new Date(Date.now() - outcome.ms).toISOString()}..${new Date().toISOString()} ${method.path} ${how} ${status[outcome.code]} ${outcome.details.slice(0, 200)} ${JSON.stringify(request).slice(0, 300)}`);
      }
      if (process.env.KTS_FUZZ_DEBUG && how === 'happy') console.log(`${key}: ${outcome.details.slice(0, 200)}`);
      const problem = problemWith(method, outcome);
      // grpc-js answers bytes that do not decode as the request type with INTERNAL "Error deserializing request", as grpc-go does.
      if (outcome.code === status.INTERNAL && !problem && outcome.details !== 'Error deserializing request') internals.add(`${method.name}: ${outcome.details.slice(0, 300)}`);
      if (problem) findings.push(`${method.path} (${how}) ${problem.slice(0, 2000)}\n  request: ${JSON.stringify(request, (_k, v) => (typeof v === 'string' && v.length > 300 ? `${v.slice(0, 300)}…(${v.length})` : v))?.slice(0, 3000)}`);
      const pid = outcome.response?.pid;
      if (outcome.code === 0 && typeof pid === 'number' && pid > 0 && typeof request?.sandbox_id === 'string' && method.name === 'Start' && method.service.endsWith('Controller')) {
        state.sandboxPids.set(request.sandbox_id, pid);
      }
    };

    for (let batch = 0; sent < CALLS; batch++) {
      factory.newGeneration(batch);
      const inBatch = Math.min(BATCH, CALLS - sent);
      let issued = 0;
      const worker = async () => {
        while (issued < inBatch) {
          issued++;
          if (rng.chance(0.05)) {
            for (const [key, makeRequest] of factory.scenario()) {
              const request = makeRequest();
              const [service, name] = key.split('.');
              const method = methods.find((m) => m.name === name && m.service.endsWith(`.${service}`) && !m.service.includes('.v2.'))!;
              await callOnce(method, Buffer.from(method.requestType.encode(method.requestType.fromObject(request)).finish()), 'happy', request);
            }
            continue;
          }
          const method = factory.pickMethod(methods);
          const { bytes, how, request } = factory.encode(method);
          // Now and then the same request twice at once: a duplicated, concurrent call on one id.
          const copies = rng.chance(0.1) ? 2 : 1;
          await Promise.all(Array.from({ length: copies }, () => callOnce(method, bytes, how, request)));
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      sent += inBatch;
      expect(findings, `findings in batch ${batch} (seed ${SEED})`).toEqual([]);
      await expectBatchLeftAConsistentDaemon(batch);
    }
    const seconds = Math.round((Date.now() - started) / 1000);
    console.log(`kts fuzz: seed ${SEED}: ${sent} requests (${calls} calls with duplicates and scripted steps) in ${seconds} s, ${methods.length} methods, no findings; replies:\n${[...codes].sort().map(([k, n]) => `  ${k}: ${n}`).join('\n')}`);
    if (process.env.KTS_FUZZ_DEBUG) console.log(JSON.stringify((await admin.ListSandboxes!({})).sandboxes.map((s: { id: string; state: string }) => [s.id, s.state])), JSON.stringify((await admin.ListContainers!({})).containers.map((c: { id: string; state: string }) => [c.id, c.state])));
    if (internals.size > 0) console.log(`kts fuzz: INTERNAL replies:\n${[...internals].map((line) => `  ${line}`).join('\n')}`);
    await removeEverything();
    expect(daemon.ktsOk('verify')).toMatch(/^ok: \d+ events, hash chain intact/);
  }, TEST_TIMEOUT_MS);

  /**
   * The Task API over ttrpc, at the address Start gives containerd: seeded frames on several connections at
   * once, requests whose payloads come from the same factory, and hostile framing. Every frame that comes
   * back is a well-formed Response on a stream the client used; a connection the server closes for a bad
   * frame (a saboteur opens its own) leaves the others served.
   */
  it(`survives ${TTRPC_FRAMES} fuzzed ttrpc frames (seed ${SEED}) on ${TTRPC_CONNECTIONS} connections at once`, async () => {
    console.log(`kts fuzz ttrpc: seed ${SEED}, ${TTRPC_FRAMES} frames on ${TTRPC_CONNECTIONS} connections and a saboteur's`);
    const ttrpcSocket = taskTtrpcSocket(daemon.socket);
    const allMethods = loadMethods();
    const taskMethods = allMethods.filter((method) => method.service.endsWith('.Task'));
    const rng = new Prng(SEED ^ 0x74747270);
    const state: FuzzState = { sandboxPids: new Map() };
    const factory = new MessageFactory(rng, places, state);
    const findings: string[] = [];
    const codes = new Map<string, number>();
    /** INTERNAL replies: printed at the end, to judge case by case. */
    const internals = new Set<string>();
    const started = Date.now();
    let sent = 0;
    let generation = -1;
    const nextGeneration = () => {
      const wanted = Math.floor(sent / 500);
      if (wanted !== generation) factory.newGeneration(TTRPC_GENERATION + (generation = wanted));
    };
    const shown = (request: unknown) => JSON.stringify(request, (_k, v) => (typeof v === 'string' && v.length > 200 ? `${v.slice(0, 200)}…(${v.length})` : v))?.slice(0, 1500);

    /** Checks one frame that came back on a connection whose streams were `streams`; a reused stream id's reply may answer any of its frames. */
    const checkReply = (reply: TtrpcReply, streams: Map<number, SentFrame[]>, where: string) => {
      const frames = streams.get(reply.streamId) ?? [];
      const problems = frames.map((sentFrame) => ttrpcProblem(reply, sentFrame.method, sentFrame.expectCode));
      const answered = frames[problems.findIndex((problem) => problem === undefined)] ?? frames[0];
      const key = `${answered?.kind ?? 'unsent'} ${status[reply.code] ?? reply.code}`;
      codes.set(key, (codes.get(key) ?? 0) + 1);
      if (reply.code === status.INTERNAL) internals.add(`${answered?.kind}: ${reply.message.slice(0, 200)}`);
      const problem = reply.malformed ?? (frames.length === 0 ? `a reply on stream ${reply.streamId}, which the client never used` : undefined) ?? (problems.includes(undefined) ? undefined : problems[0]);
      if (problem) findings.push(`${where} stream ${reply.streamId} (${answered?.kind} ${answered?.method?.path ?? ''}) ${problem.slice(0, 2000)}\n  request: ${shown(answered?.request)}`);
    };

    /** One random kind of frame (or a few, for "tiny"), on the next stream ids of a connection. */
    const makeFrames = (ids: StreamIds): Array<{ bytes: Buffer; sent: SentFrame }> => {
      const method = rng.pick(taskMethods);
      const { bytes: payload, how, request } = factory.encode(method);
      const namespaced = (metadata: Array<{ key: string; value: string }> = []) => [...(rng.chance(0.5) ? [{ key: 'containerd-namespace-ttrpc', value: 'k8s.io' }] : []), ...metadata];
      const body = (metadata?: Array<{ key: string; value: string }>) => requestBody({ service: method.service, method: method.name, payload, metadata: namespaced(metadata), timeoutNano: rng.pick([0, 0, 1e9, -1]) });
      const mustReply = !isWaiting(method);
      const r = rng.next();
      if (r < 0.55) {
        const streamId = ids.next();
        const one = { bytes: frame(streamId, TTRPC_REQUEST, body()), sent: { streamId, kind: `request/${how}`, method, mustReply, request } };
        // Now and then the same request twice at once: a duplicated, concurrent call on one id.
        if (!rng.chance(0.1)) return [one];
        const again = ids.next();
        return [one, { bytes: frame(again, TTRPC_REQUEST, body()), sent: { ...one.sent, streamId: again } }];
      }
      if (r < 0.61) {
        const streamId = ids.next();
        return [{ bytes: frame(streamId, rng.pick([0, 2, 3, 4, 0x7f, 0xff]), body()), sent: { streamId, kind: 'wrong-type', method, mustReply: false, request } }];
      }
      if (r < 0.66) {
        const streamId = ids.next();
        return [{ bytes: frame(streamId, TTRPC_REQUEST, body(), 1 + rng.int(255)), sent: { streamId, kind: 'flags', method, mustReply, request } }];
      }
      if (r < 0.72) {
        const streamId = ids.hostile(rng);
        return [{ bytes: frame(streamId, TTRPC_REQUEST, body()), sent: { streamId, kind: 'stream-id', method, mustReply, request } }];
      }
      if (r < 0.78) {
        const streamId = ids.next();
        const notRequest = rng.pick([
          () => rng.bytes(rng.int(300)), () => payload, () => Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), () => Buffer.from([0x2a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
          () => Buffer.from([0x22, 0x05, 0x08, 0x01]), () => Buffer.alloc(1 + rng.int(64), 0xff),
        ])();
        return [{ bytes: frame(streamId, TTRPC_REQUEST, notRequest), sent: { streamId, kind: 'not-a-request', mustReply: true } }];
      }
      if (r < 0.84) {
        const streamId = ids.next();
        const other = rng.pick(allMethods.filter((m) => !m.service.endsWith('.Task')));
        const [service, name] = rng.pick([
          [other.service, other.name], [method.service, 'Teleport'], ['', ''], [method.service, ''], ['', method.name], [`${method.service}/${method.name}`, ''],
          [method.service.replace('Task', 'task'), method.name], [method.service, method.name.toLowerCase()], ['containerd.task.v1.Task', method.name],
          ['x'.repeat(100_000), 'y'.repeat(100_000)], [`${method.service}\u0000`, method.name], [method.service, `${method.name}\u0000`],
        ] as const);
        // Now and then a service name that fills the frame: the refusal quoting it must still fit in one.
        const bytes = rng.chance(0.03)
          ? frame(streamId, TTRPC_REQUEST, requestBody({ service: 's'.repeat(TTRPC_MAX_BODY_BYTES - 20), method: 'm', payload: Buffer.alloc(0) }))
          : frame(streamId, TTRPC_REQUEST, requestBody({ service, method: name, payload, metadata: namespaced() }));
        return [{ bytes, sent: { streamId, kind: 'unknown-method', method: { ...method, service, name, path: `/${service.slice(0, 80)}/${name.slice(0, 80)}` }, mustReply: true, expectCode: status.UNIMPLEMENTED } }];
      }
      if (r < 0.93) {
        const streamId = ids.next();
        const metadata = rng.pick([
          () => Array.from({ length: 20_000 }, (_, i) => ({ key: `k${i}`, value: 'v'.repeat(80) })),
          () => [{ key: 'big', value: 'x'.repeat(3 << 20) }],
          () => [{ key: 'containerd-namespace-ttrpc', value: 'n'.repeat(1 << 20) }],
          () => [{ key: 'traceparent', value: rng.pick(['00-zz-yy-01', `00-${'0'.repeat(32)}-${'0'.repeat(16)}-01`, 'x'.repeat(100_000)]) }],
          () => [{ key: 'Upper-Case', value: 'v' }, { key: 'x-bin', value: 'not base64 ü' }, { key: ':path', value: '/x' }, { key: '', value: '' }, { key: 'grpc-timeout', value: '1n' }],
          () => Array.from({ length: 200 }, () => ({ key: factory.string().slice(0, 300), value: factory.string().slice(0, 3000) })),
        ])();
        return [{ bytes: frame(streamId, TTRPC_REQUEST, body(metadata)), sent: { streamId, kind: 'huge-metadata', method, mustReply, request } }];
      }
      // Many tiny frames: empty Requests (no service, no method), each one answered.
      return Array.from({ length: 2 + rng.int(14) }, () => {
        const streamId = ids.next();
        return { bytes: frame(streamId, TTRPC_REQUEST, Buffer.alloc(0)), sent: { streamId, kind: 'tiny', mustReply: true, expectCode: status.UNIMPLEMENTED } };
      });
    };

    /** A pod's life in order (with steps left out or said twice): the Controller over gRPC, the Task API over this ttrpc connection. */
    const scenario = async (connection: TtrpcConnection, ids: StreamIds, streams: Map<number, SentFrame[]>) => {
      for (const [key, makeRequest] of factory.scenario()) {
        const request = makeRequest();
        const [service, name] = key.split('.');
        if (service === 'Task') {
          const version = rng.chance(0.5) ? 'containerd.task.v3.Task' : 'containerd.task.v2.Task';
          const method = taskMethods.find((m) => m.name === name && m.service === version)!;
          const streamId = ids.next();
          const sentFrame = { streamId, kind: 'scenario', method, mustReply: true, request };
          streams.set(streamId, [...(streams.get(streamId) ?? []), sentFrame]);
          connection.write(frame(streamId, TTRPC_REQUEST, requestBody({ service: version, method: name!, payload: method.requestType.encode(method.requestType.fromObject(request)).finish() })));
          sent++;
          if (!(await connection.replyTo(streamId, CALL_DEADLINE_MS))) findings.push(`no reply in ${CALL_DEADLINE_MS} ms to ${method.path} (scenario) on stream ${streamId}: ${shown(request)}`);
          continue;
        }
        const method = allMethods.find((m) => m.name === name && m.service.endsWith(`.${service}`) && !m.service.includes('.v2.'))!;
        const outcome = await raw.unary(method, Buffer.from(method.requestType.encode(method.requestType.fromObject(request)).finish()), 'happy', isWaiting(method) ? WAITING_DEADLINE_MS : CALL_DEADLINE_MS);
        const problem = problemWith(method, outcome);
        if (problem) findings.push(`${method.path} (scenario over gRPC) ${problem}`);
        const pid = outcome.response?.pid;
        if (outcome.code === 0 && typeof pid === 'number' && pid > 0 && method.name === 'Start' && service === 'Controller') state.sandboxPids.set(String(request.sandbox_id), pid);
      }
    };

    const worker = async (index: number) => {
      let connection = await TtrpcConnection.open(ttrpcSocket);
      let ids = new StreamIds();
      let streams = new Map<number, SentFrame[]>();
      let checked = 0;
      const checkNewReplies = () => {
        for (; checked < connection.replies.length; checked++) checkReply(connection.replies[checked]!, streams, `connection ${index}:`);
      };
      while (sent < TTRPC_FRAMES) {
        nextGeneration();
        if (rng.chance(0.06)) {
          await scenario(connection, ids, streams);
        } else {
          const made = Array.from({ length: 1 + rng.int(4) }, () => makeFrames(ids)).flat();
          // A generated frame beyond ttrpc's 4 MiB closes its connection: it goes on one of its own.
          for (const { bytes } of made.filter((m) => m.bytes.length > TTRPC_HEADER_BYTES + TTRPC_MAX_BODY_BYTES)) await breakConnection('a generated frame beyond 4 MiB', (connection) => connection.write(bytes, 1 << 16));
          const group = made.filter((m) => m.bytes.length <= TTRPC_HEADER_BYTES + TTRPC_MAX_BODY_BYTES);
          for (const { sent: sentFrame } of group) streams.set(sentFrame.streamId, [...(streams.get(sentFrame.streamId) ?? []), sentFrame]);
          const bytes = Buffer.concat(group.map((g) => g.bytes));
          // Mostly one write; else in pieces, down to a byte at a time for small groups: framing must not care.
          connection.write(bytes, rng.chance(0.8) ? bytes.length : bytes.length < 4096 && rng.chance(0.3) ? 1 : 1 + rng.int(512));
          sent += group.length;
          for (const { sent: sentFrame } of group.filter((g) => g.sent.mustReply)) {
            const reply = await connection.replyTo(sentFrame.streamId, CALL_DEADLINE_MS);
            if (!reply) findings.push(`connection ${index}: no reply in ${CALL_DEADLINE_MS} ms to ${sentFrame.kind} ${sentFrame.method?.path ?? ''} on stream ${sentFrame.streamId} (connection ${connection.closedBy ?? 'open'}): ${shown(sentFrame.request)}`);
          }
        }
        checkNewReplies();
        if (!connection.isOpen) {
          findings.push(`connection ${index}: the server closed a connection that sent no bad frame (${connection.closedBy})`);
          connection = await TtrpcConnection.open(ttrpcSocket);
          ids = new StreamIds();
          streams = new Map();
          checked = 0;
        }
      }
      // Replies to frames that need none (wrong type, Wait) that came in meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 200));
      checkNewReplies();
      connection.destroy();
    };

    /** Opens a connection, lets `sabotage` break it, and expects the server to close it within 5 s; whatever came back must still be well-formed. */
    let broken = 0;
    const breakConnection = async (how: string, sabotage: (connection: TtrpcConnection, ids: StreamIds) => void) => {
      const connection = await TtrpcConnection.open(ttrpcSocket);
      const ids = new StreamIds();
      sabotage(connection, ids);
      await Promise.race([connection.closed, new Promise((resolve) => setTimeout(resolve, 5000))]);
      if (connection.isOpen) findings.push(`a connection stayed open 5 s after "${how}"`);
      connection.destroy();
      const streams = new Map(Array.from({ length: 3 }, (_, i) => [2 * i + 1, [{ streamId: 2 * i + 1, kind: how, mustReply: false }]] as [number, SentFrame[]]));
      for (const reply of connection.replies) checkReply(reply, streams, `a connection broken by "${how}":`);
      broken++;
    };

    /** Breaks connections of its own while the workers run: a header beyond 4 MiB, a body beyond it, a frame cut short then the end. */
    const saboteur = async () => {
      while (sent < TTRPC_FRAMES) {
        const method = rng.pick(taskMethods);
        const valid = frame(1, TTRPC_REQUEST, requestBody({ service: method.service, method: method.name, payload: factory.encode(method).bytes }));
        const how = rng.pick(['header beyond 4 MiB', 'body beyond 4 MiB', 'truncated then end', 'header of 4 MiB then end', 'truncated then destroy']);
        const before = rng.chance(0.5);
        await breakConnection(how, (connection, ids) => {
          if (before) connection.write(valid);
          const streamId = ids.next() + 2;
          if (how === 'header beyond 4 MiB') connection.write(frame(streamId, TTRPC_REQUEST, Buffer.alloc(rng.int(64)), 0, rng.pick([TTRPC_MAX_BODY_BYTES + 1, 0x7fffffff, 0xffffffff])));
          if (how === 'body beyond 4 MiB') connection.write(frame(streamId, TTRPC_REQUEST, requestBody({ service: method.service, method: method.name, payload: Buffer.alloc(TTRPC_MAX_BODY_BYTES + rng.int(1000)) })), 1 << 16);
          if (how.startsWith('truncated')) connection.write(valid.subarray(0, 1 + rng.int(valid.length - 1)));
          if (how === 'header of 4 MiB then end') connection.write(frame(streamId, TTRPC_REQUEST, Buffer.alloc(0), 0, TTRPC_MAX_BODY_BYTES));
          if (how.endsWith('then end')) connection.end();
          if (how.endsWith('then destroy')) connection.destroy();
        });
        sent += before ? 2 : 1;
        await new Promise((resolve) => setTimeout(resolve, rng.int(100)));
      }
    };

    await Promise.all([saboteur(), ...Array.from({ length: TTRPC_CONNECTIONS }, (_, index) => worker(index))]);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    expect(findings, `ttrpc findings (seed ${SEED})`).toEqual([]);
    expect(isAlive(daemon.process!.pid!), `daemon alive after the ttrpc fuzz\n${daemon.logs.slice(-4000)}`).toBe(true);
    console.log(`kts fuzz ttrpc: seed ${SEED}: ${sent} frames in ${seconds} s, ${broken} connections broken on purpose, no findings; replies:\n${[...codes].sort().map(([k, n]) => `  ${k}: ${n}`).join('\n')}`);
    if (internals.size > 0) console.log(`kts fuzz ttrpc: INTERNAL replies:\n${[...internals].map((line) => `  ${line}`).join('\n')}`);
    await expectTaskLifeOverTtrpc(ttrpcSocket, taskMethods);
    await expectBatchLeftAConsistentDaemon('ttrpc');
    await removeEverything();
    expect(daemon.ktsOk('verify')).toMatch(/^ok: \d+ events, hash chain intact/);
  }, 120_000 + TTRPC_FRAMES * 20);

  /** After the fuzz, a plain container's life over ttrpc still works: Create, Start, Wait (its exit status), Delete. */
  async function expectTaskLifeOverTtrpc(ttrpcSocket: string, taskMethods: FuzzMethod[]): Promise<void> {
    const sandboxId = 'fzt-after';
    const { pid } = await controller.Start!({ sandbox_id: (await controller.Create!({ sandbox_id: sandboxId, sandboxer: 'runc' }), sandboxId) });
    const bundle = path.join(places.work, 'after-bundle');
    mkdirSync(bundle, { recursive: true });
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociSpec(sandboxId, pid, ['sh', '-c', 'exit 3'])));
    const call = async (name: string, request: Record<string, unknown>) => {
      const method = taskMethods.find((m) => m.name === name && m.service === 'containerd.task.v3.Task')!;
      const reply = await ttrpcCall(ttrpcSocket, { service: method.service, method: name, payload: method.requestType.encode(method.requestType.fromObject(request)).finish() });
      expect(reply, `Task ${name} over ttrpc`).toMatchObject({ type: TTRPC_RESPONSE, code: 0 });
      return method.responseType.toObject(method.responseType.decode(reply!.payload), { longs: Number }) as Record<string, number>;
    };
    expect((await call('Create', { id: `${sandboxId}-c1`, bundle, rootfs: [{ type: 'bind', source: places.lower, options: ['rbind', 'ro'] }] })).pid).toBeGreaterThan(0);
    await call('Start', { id: `${sandboxId}-c1` });
    expect((await call('Wait', { id: `${sandboxId}-c1` })).exit_status).toBe(3);
    await call('Delete', { id: `${sandboxId}-c1` });
    await controller.Shutdown!({ sandbox_id: sandboxId });
  }
});

// Inputs the fuzzer found breaking the daemon, kept as named cases.
describe.skipIf(skip)(`API fuzzing's findings, kept${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let lower: string;
  let controller: ProtoClient;
  let admin: ProtoClient;
  const bundlesDir = () => path.join(daemon.root, 'bundles');
  const leftBundles = () => (existsSync(bundlesDir()) ? readdirSync(bundlesDir()) : []);

  beforeAll(async () => {
    await daemon.start();
    lower = busyboxRootfs(path.join(daemon.root, 'image'));
    controller = controllerClient(daemon.socket);
    admin = adminClient(daemon.socket);
  });
  afterAll(async () => {
    controller?.close();
    admin?.close();
    await daemon.cleanup();
  });

  const prepare = (sandboxId: string, containerId: string, pid: number, args = ['sleep', '600']) => admin.Prepare!({
    sandbox_id: sandboxId, container_id: containerId, spec_json: JSON.stringify(ociSpec(sandboxId, pid, args)),
    rootfs_json: [JSON.stringify({ type: 'bind', source: lower, options: ['rbind', 'ro'] })],
  });

  it('an error quoting a 1 MB ref still ends the call: its message is cut to fit the status trailer (seed 1, Admin Inspect)', async () => {
    for (const ref of ['x'.repeat(1_000_000), 'ü'.repeat(100_000)]) {
      const error = await Promise.race([admin.Inspect!({ ref }).then(() => 'answered', (e: { code: number; details: string }) => e), new Promise((resolve) => setTimeout(() => resolve('no answer in 10 s'), 10_000))]);
      expect(error).toMatchObject({ code: status.NOT_FOUND, details: expect.stringMatching(/^no pod or container "x*ü*… \(\d+ more characters cut\)$/) });
    }
  });

  it('a ttrpc request naming a service of up to 4 MiB is refused in a frame within ttrpc\'s limit, its message cut (seed 3, ttrpc)', async () => {
    for (const service of ['x'.repeat(100_000), 's'.repeat(TTRPC_MAX_BODY_BYTES - 20)]) {
      const reply = await ttrpcCall(taskTtrpcSocket(daemon.socket), { service, method: 'm', payload: Buffer.alloc(0) });
      expect(reply).toMatchObject({ type: TTRPC_RESPONSE, code: status.UNIMPLEMENTED, message: expect.stringMatching(/^(x+|s+)… \(\d+ more characters cut\)$/) });
      expect(reply!.malformed).toBeUndefined();
    }
    expect(isAlive(daemon.process!.pid!)).toBe(true);
  });

  it('a NUL byte in a rootfs mount is INVALID_ARGUMENT, not INTERNAL from spawning mount(8) (seed 1597193620)', async () => {
    const { pid } = await controller.Start!({ sandbox_id: (await controller.Create!({ sandbox_id: 'fz-nul', sandboxer: 'runc' }), 'fz-nul') });
    const bundle = path.join(daemon.root, 'nul-bundle');
    mkdirSync(bundle, { recursive: true });
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociSpec('fz-nul', pid, ['true'])));
    const task = taskClient(daemon.socket);
    try {
      await expect(task.Create!({ id: 'fz-nul-c1', bundle, rootfs: [{ type: 'bind', source: lower, target: 'x\u0000y', options: ['rbind'] }] }))
        .rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: 'rootfs[0].target must not contain a NUL byte' });
    } finally {
      task.close();
    }
    await expect(admin.Prepare!({
      sandbox_id: 'fz-nul', container_id: 'fz-nul-c2', spec_json: JSON.stringify(ociSpec('fz-nul', pid, ['true'])),
      rootfs_json: [JSON.stringify({ type: 'tmpfs', source: 'tmpfs', options: ['\u0000'] })],
    })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: 'rootfs_json[0].options[0] must not contain a NUL byte' });
    expect(leftBundles()).toEqual([]);
    await controller.Shutdown!({ sandbox_id: 'fz-nul' });
  });

  it('a relative netns_path is refused at Create, not left for the pod\'s init to open from its own directory at Start', async () => {
    for (const netnsPath of ['../../../tmp/x/pwn', 'd71c16f466bb', '.']) {
      await expect(controller.Create!({ sandbox_id: 'fz-netns', sandboxer: 'runc', netns_path: netnsPath }))
        .rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/^netns_path ".*" must be an absolute path without "\.\."$/) });
    }
    await expect(controller.Status!({ sandbox_id: 'fz-netns' })).rejects.toMatchObject({ code: status.NOT_FOUND });
  });

  it('a refused Prepare (the pod is created, not started) leaves no bundle directory behind (seed 1)', async () => {
    await controller.Create!({ sandbox_id: 'fz-not-started', sandboxer: 'runc' });
    await expect(prepare('fz-not-started', 'fz-not-started-c1', 1)).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
    expect(leftBundles()).toEqual([]);
    await controller.Shutdown!({ sandbox_id: 'fz-not-started' });
  });

  it('a Prepared container whose runc create failed leaves no bundle once its pod is shut down (seed 1, batch 2)', async () => {
    await controller.Create!({ sandbox_id: 'fz-failed-create', sandboxer: 'runc' });
    await controller.Start!({ sandbox_id: 'fz-failed-create' });
    await expect(prepare('fz-failed-create', 'fz-failed-create-c1', 999_999)).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
    await controller.Shutdown!({ sandbox_id: 'fz-failed-create' });
    await until('the bundles to go', () => leftBundles().length === 0, 5000).catch(() => undefined);
    expect(leftBundles()).toEqual([]);
  });

  it('a Prepare refused because a Task Create took the id leaves no bundle directory of its own (seed 1, batch 1)', async () => {
    const { pid } = await controller.Start!({ sandbox_id: (await controller.Create!({ sandbox_id: 'fz-taken', sandboxer: 'runc' }), 'fz-taken') });
    const bundle = path.join(daemon.root, 'task-bundle');
    mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociSpec('fz-taken', 999_999, ['true'])));
    const task = taskClient(daemon.socket);
    try {
      await expect(task.Create!({ id: 'fz-taken-c1', bundle, rootfs: [{ type: 'bind', source: lower, options: ['rbind', 'ro'] }] })).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
    } finally {
      task.close();
    }
    await expect(prepare('fz-taken', 'fz-taken-c1', pid)).rejects.toMatchObject({ code: status.ALREADY_EXISTS });
    expect(leftBundles()).toEqual([]);
    await controller.Shutdown!({ sandbox_id: 'fz-taken' });
  });

  it('a second Prepare of a live container id is refused and leaves the first one\'s bundle and log alone', async () => {
    const { pid } = await controller.Start!({ sandbox_id: (await controller.Create!({ sandbox_id: 'fz-twice', sandboxer: 'runc' }), 'fz-twice') });
    const { bundle } = await prepare('fz-twice', 'fz-twice-c1', pid);
    const configBefore = readFileSync(path.join(bundle, 'config.json'), 'utf8');
    await expect(prepare('fz-twice', 'fz-twice-c1', pid, ['echo', 'other'])).rejects.toMatchObject({ code: status.ALREADY_EXISTS });
    expect(readFileSync(path.join(bundle, 'config.json'), 'utf8')).toBe(configBefore);
    await controller.Shutdown!({ sandbox_id: 'fz-twice' });
    await until('the bundles to go', () => leftBundles().length === 0);
  });
});
