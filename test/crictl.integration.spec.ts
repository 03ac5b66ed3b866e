// The real node stack in front of kts: containerd 2.4 (scripts/containerd-node.sh, with kts as its
// sandboxer) and crictl, both built by scripts/build-peers.sh. Every assertion is what an operator
// running crictl sees, plus what kts itself records.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGES_DIR, REPO, TestDaemon, canRunContainers, canRunVms, isAlive, mountsUnder, until } from './helpers/daemon.js';
import { PEERS_BIN } from './helpers/peers.js';
import { OtlpReceiver } from './helpers/otlpReceiver.js';

const NODE_SCRIPT = path.join(REPO, 'scripts/containerd-node.sh');
const BRIDGE = 'ktsctd0';
const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';
const skipVm = canRunVms() ?? (existsSync(path.join(GUEST_DIR, 'vmlinuz')) ? undefined : `needs the microVM guest in ${GUEST_DIR} (bash scripts/build-guest.sh)`);

function whyNot(): string | undefined {
  const base = canRunContainers();
  if (base) return base;
  for (const binary of ['containerd', 'ctr', 'crictl']) {
    if (!existsSync(path.join(PEERS_BIN, binary))) return `needs the peers in ${PEERS_BIN} (bash scripts/build-peers.sh; scripts/test.sh runs it)`;
  }
  if (!existsSync('/usr/lib/cni/bridge')) return 'needs the CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)';
  return undefined;
}
const skip = whyNot();

interface Run { stdout: string; stderr: string; code: number }

function run(file: string, args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { env: { ...process.env, ...options.env }, encoding: 'utf8', timeout: options.timeoutMs ?? 90_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      resolve({ stdout, stderr, code: error ? (typeof error.code === 'number' ? error.code : 1) : 0 });
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
}

describe.skipIf(skip)(`crictl → containerd 2.4 → kts${skip ? ` (skipped: ${skip})` : ''}`, () => {
  // task_relay: containerd's task connections go through a relay that outlives the daemon (api/taskRelay.ts).
  const daemon = new TestDaemon(`[hypervisor]\nguest_dir = "${GUEST_DIR}"\naccelerator = "auto"\nboot_deadline_seconds = 120\n`, { topToml: 'task_relay = true' });
  const relayPidFile = () => path.join(daemon.root, 'task-relay.pid');
  const nodeDir = mkdtempSync(path.join(tmpdir(), 'kts-ctd-'));
  const specDir = path.join(nodeDir, 'specs');
  const nodeEnv = {
    KTS_CTD_DIR: nodeDir, KTS_CTD_KTS_SOCKET: daemon.socket, KTS_CTD_START_KTS: '0', KTS_CTD_IMAGES_DIR: IMAGES_DIR,
    KTS_CTD_HANDLERS: 'kts-runc kts-wasm kts-vmm runc', KTS_PEERS_DIR: path.dirname(PEERS_BIN),
  };

  const node = async (command: string) => {
    const result = await run('bash', [NODE_SCRIPT, command], { env: nodeEnv, timeoutMs: 600_000 });
    if (result.code !== 0) throw new Error(`containerd-node.sh ${command} exited ${result.code}:\n${result.stdout}${result.stderr}`);
    return result.stdout;
  };
  const crictl = (...args: string[]) => run(path.join(PEERS_BIN, 'crictl'), ['--config', path.join(nodeDir, 'crictl.yaml'), ...args]);
  const crictlWithInput = (input: string, ...args: string[]) => run(path.join(PEERS_BIN, 'crictl'), ['--config', path.join(nodeDir, 'crictl.yaml'), ...args], { input });
  const crictlOk = async (...args: string[]) => {
    const result = await crictl(...args);
    if (result.code !== 0) throw new Error(`crictl ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
    return result.stdout.trim();
  };
  /** crictl takes flags before the positional arguments only. */
  const json = async <T>(command: string, ...args: string[]) => JSON.parse(await crictlOk(command, '-o', 'json', ...args)) as T;
  const containerdPid = () => Number(readFileSync(path.join(nodeDir, 'containerd.pid'), 'utf8'));

  let podSeq = 0;
  /** A pod config file for crictl (CRI PodSandboxConfig as JSON). */
  function podConfig(name: string, extra: Record<string, unknown> = {}): string {
    const file = path.join(specDir, `pod-${name}.json`);
    writeFileSync(file, JSON.stringify({ metadata: { name, namespace: 'crictl-test', uid: `uid-${name}-${++podSeq}`, attempt: 0 }, log_directory: path.join(nodeDir, 'logs', name), linux: {}, ...extra }));
    return file;
  }
  function containerConfig(name: string, image: string, extra: Record<string, unknown>): string {
    const file = path.join(specDir, `ctr-${name}.json`);
    writeFileSync(file, JSON.stringify({ metadata: { name }, image: { image }, log_path: `${name}.log`, linux: {}, ...extra }));
    return file;
  }
  const TICKER = ['sh', '-c', 'echo hello from crictl; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done'];

  /** runp + create + start as an operator types them; returns the ids and the time it took. */
  async function runPod(name: string, handler: string, image = 'docker.io/library/busybox:latest', extra: Record<string, unknown> = { command: TICKER }, podExtra: Record<string, unknown> = {}) {
    const pod = podConfig(name, podExtra);
    const started = performance.now();
    const podId = await crictlOk('runp', '--runtime', handler, pod);
    const containerId = await crictlOk('create', podId, containerConfig(name, image, extra), pod);
    await crictlOk('start', containerId);
    return { podId, containerId, ms: performance.now() - started };
  }

  interface PodStatus { status: { state: string; network: { ip: string }; metadata: { name: string } } }
  interface ContainerStatus { status: { state: string; exitCode: number; id: string } }
  interface KtsPod { id: string; name: string; namespace: string; kind: string; state: string; pid: number }
  const ktsPods = () => JSON.parse(daemon.ktsOk('pods', '--json')) as KtsPod[];

  // containerd and kts both export their spans here (OTEL_* in their environments).
  const receiver = new OtlpReceiver();

  beforeAll(async () => {
    mkdirSync(specDir, { recursive: true });
    await receiver.start();
    Object.assign(nodeEnv, receiver.env);
    await daemon.start(receiver.env);
    await node('up');
  }, 600_000);

  afterAll(async () => {
    try {
      await node('clean');
    } finally {
      const relayPid = existsSync(relayPidFile()) ? Number(readFileSync(relayPidFile(), 'utf8')) : undefined;
      await daemon.cleanup();
      if (relayPid && isAlive(relayPid)) process.kill(relayPid, 'SIGTERM');
      if (relayPid) await until('the task relay to exit', () => !isAlive(relayPid));
      await rm(nodeDir, { recursive: true, force: true });
      await receiver.stop();
    }
  }, 120_000);

  describe('the runc kind', () => {
    let podId = '';
    let containerId = '';

    it('runp, create and start make a READY pod with an IP on the node\'s bridge and a running container', async () => {
      const started = await runPod('web', 'kts-runc');
      ({ podId, containerId } = started);
      console.log(`crictl runp+create+start (kts-runc): ${started.ms.toFixed(0)} ms`);
      const pod = await json<PodStatus>('inspectp', podId);
      expect(pod.status.state).toBe('SANDBOX_READY');
      expect(pod.status.network.ip).toMatch(/^10\.88\.214\.\d+$/);
      expect(await crictlOk('pods', '-q', '--name', 'web')).toBe(podId);
      expect(await crictlOk('ps', '-q', '--pod', podId, '--state', 'Running')).toBe(containerId);
      // kts holds it, under the CRI pod's name
      expect(ktsPods().find((p) => p.id === podId)).toMatchObject({ name: 'web', kind: 'runc', state: 'ready' });
    });

    it('containerd can decode the sandbox spec kts returned (no "failed to unmarshal sandbox spec" in its log)', async () => {
      expect(readFileSync(path.join(nodeDir, 'containerd.log'), 'utf8')).not.toMatch(/failed to unmarshal sandbox spec/);
    });

    it('logs shows the container\'s output, and logs -f follows it', async () => {
      await until('the first lines in crictl logs', async () => (await crictlOk('logs', containerId)).includes('hello from crictl'));
      const follower = spawn(path.join(PEERS_BIN, 'crictl'), ['--config', path.join(nodeDir, 'crictl.yaml'), 'logs', '-f', '--tail', '1', containerId], { stdio: ['ignore', 'pipe', 'pipe'] });
      let followed = '';
      follower.stdout!.on('data', (chunk) => (followed += chunk));
      try {
        const first = await until('a tick from logs -f', () => Number(/tick (\d+)/.exec(followed)?.[1] ?? 0));
        await until('a later tick from logs -f', () => [...followed.matchAll(/tick (\d+)/g)].some((m) => Number(m[1]) > first + 2));
      } finally {
        follower.kill();
      }
    });

    it('exec -s prints the output and fails with the command\'s exit code in the message; exec passes stdin', async () => {
      const ok = await crictl('exec', '-s', containerId, 'sh', '-c', 'echo out-$((6*7)); hostname');
      expect(ok.code).toBe(0);
      expect(ok.stdout).toContain('out-42');
      const failed = await crictl('exec', '-s', containerId, 'sh', '-c', 'echo to-stderr >&2; exit 7');
      expect(failed.code).not.toBe(0);
      expect(failed.stderr).toMatch(/exited with 7: to-stderr/);
      const streamed = await crictl('exec', containerId, 'sh', '-c', 'exit 3');
      expect(streamed.stderr).toMatch(/command terminated with exit code 3/);
      const withStdin = await crictlWithInput('line one\nline two\n', 'exec', '-i', containerId, 'sh', '-c', 'wc -l; echo done');
      expect(withStdin.code).toBe(0);
      expect(withStdin.stdout).toMatch(/^\s*2\s*\ndone/);
    });

    it('stats and statsp report the container\'s and the pod\'s memory', async () => {
      const stats = await json<{ stats: Array<{ attributes: { id: string }; memory: { workingSetBytes: { value: string } } }> }>('stats', '--id', containerId);
      expect(stats.stats).toHaveLength(1);
      expect(Number(stats.stats[0]!.memory.workingSetBytes.value)).toBeGreaterThan(0);
      const podStats = await json<{ stats: Array<{ attributes: { id: string }; linux: { memory: { workingSetBytes: { value: string } } } }> }>('statsp', '--id', podId);
      expect(podStats.stats[0]!.attributes.id).toBe(podId);
      expect(Number(podStats.stats[0]!.linux.memory.workingSetBytes.value)).toBeGreaterThan(0);
    });

    it('kts history of the pod shows the CRI pod name and containerd\'s k8s.io namespace', () => {
      const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { chainOk: boolean; events: Array<{ type: string; caller: string; payload: { name?: string } }> };
      expect(history.chainOk).toBe(true);
      const created = history.events.find((e) => e.type === 'SandboxCreated')!;
      expect(created.payload.name).toBe('web');
      expect(created.caller).toMatch(/ns=k8s\.io/);
      expect(history.events.some((e) => e.type === 'ContainerStarted' && /containerd\.task\.v3\.Task\/Start/.test(e.caller))).toBe(true);
    });

    it('when containerd traces, the pod\'s events carry containerd\'s trace ids: one trace from CRI RunPodSandbox through kts', async () => {
      const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ type: string; traceId: string }> };
      const created = history.events.find((e) => e.type === 'SandboxCreated')!;
      expect(created.traceId).toMatch(/^[0-9a-f]{32}$/);
      const fromContainerd = await until('containerd\'s spans of that trace', () => {
        const spans = receiver.trace(created.traceId).filter((span) => span.service === 'containerd');
        return spans.length > 0 ? spans : undefined;
      }, 30_000);
      expect(fromContainerd.map((span) => span.name).join(' ')).toMatch(/RunPodSandbox|sandbox/i);
    });

    it('stop and rm end the container; stopp and rmp remove the pod, its netns and everything kts held', async () => {
      const holderPid = ktsPods().find((p) => p.id === podId)!.pid;
      await crictlOk('stop', '--timeout', '2', containerId);
      expect((await json<ContainerStatus>('inspect', containerId)).status.state).toBe('CONTAINER_EXITED');
      await crictlOk('rm', containerId);
      expect(await crictlOk('ps', '-a', '-q', '--pod', podId)).toBe('');
      await crictlOk('stopp', podId);
      expect((await json<PodStatus>('inspectp', podId)).status.state).toBe('SANDBOX_NOTREADY');
      await crictlOk('rmp', podId);
      expect(await crictlOk('pods', '-q', '--name', 'web')).toBe('');
      expect(ktsPods().some((p) => p.id === podId)).toBe(false);
      expect(isAlive(holderPid)).toBe(false);
      expect(mountsUnder(path.join(nodeDir, 'state', 'io.containerd.runtime.v2.task'))).toEqual([]);
      expect(mountsUnder(path.join(nodeDir, 'state', 'io.containerd.grpc.v1.cri', 'netns'))).toEqual([]);
    });
  });

  describe('the runc kind: what a pod asks of its namespaces, terminals and OOM kills', () => {
    const hostNet = readlinkSync('/proc/self/ns/net');
    const hostValue = (file: string) => readFileSync(file, 'utf8').trim();

    it('host network, own IPC with its sysctls, and dns_config as the container\'s /etc/resolv.conf; the host keeps its values', async () => {
      const shmBefore = hostValue('/proc/sys/kernel/shm_rmid_forced');
      const mqBefore = hostValue('/proc/sys/fs/mqueue/msg_max');
      const { podId, containerId } = await runPod('nsopts', 'kts-runc', undefined, { command: ['sleep', '3600'] }, {
        dns_config: { servers: ['10.10.10.10'], searches: ['kts.test'], options: ['ndots:2'] },
        linux: { sysctls: { 'kernel.shm_rmid_forced': '1', 'fs.mqueue.msg_max': '64' }, security_context: { namespace_options: { network: 2 } } },
      });
      const seen = await crictlOk('exec', '-s', containerId, 'sh', '-c', 'cat /etc/resolv.conf; readlink /proc/self/ns/net; cat /proc/sys/kernel/shm_rmid_forced /proc/sys/fs/mqueue/msg_max');
      expect(seen).toContain('search kts.test\nnameserver 10.10.10.10\noptions ndots:2');
      expect(seen).toContain(hostNet);
      expect(seen.split('\n').slice(-2)).toEqual(['1', '64']);
      expect([hostValue('/proc/sys/kernel/shm_rmid_forced'), hostValue('/proc/sys/fs/mqueue/msg_max')]).toEqual([shmBefore, mqBefore]);
      // The privileged request stays on record: kts inspect shows it.
      const inspected = JSON.parse(daemon.ktsOk('inspect', podId)) as { linux: { hostNetwork?: boolean; sysctls?: Record<string, string> } };
      expect(inspected.linux).toMatchObject({ hostNetwork: true, sysctls: { 'kernel.shm_rmid_forced': '1' } });
      await crictlOk('rmp', '--force', podId);
    });

    it('refuses a sysctl that is not namespaced, or one of a namespace the pod shares with the host, naming it', async () => {
      const coreBefore = hostValue('/proc/sys/kernel/core_pattern');
      const notNamespaced = await crictl('runp', '--runtime', 'kts-runc', podConfig('bad-sysctl', { linux: { sysctls: { 'kernel.core_pattern': '|/tmp/evil' } } }));
      expect(notNamespaced.code).not.toBe(0);
      expect(notNamespaced.stderr).toMatch(/pod sysctl \W+kernel\.core_pattern\W+ is not namespaced/);
      const sharedWithHost = await crictl('runp', '--runtime', 'kts-runc', podConfig('bad-hostnet', {
        linux: { sysctls: { 'net.ipv4.ip_forward': '0' }, security_context: { namespace_options: { network: 2 } } },
      }));
      expect(sharedWithHost.code).not.toBe(0);
      expect(sharedWithHost.stderr).toMatch(/with the host's network namespace would change the host/);
      expect(hostValue('/proc/sys/kernel/core_pattern')).toBe(coreBefore);
      expect(ktsPods().some((p) => p.name.startsWith('bad-'))).toBe(false);
    });

    it('exec -it gives the command a terminal that takes its input, and ends with its exit code', async () => {
      const { podId, containerId } = await runPod('tty', 'kts-runc', undefined, { command: ['sleep', '3600'] });
      // crictl wants a terminal of its own for -t: script(1) gives it one, fed from our input.
      const command = `${path.join(PEERS_BIN, 'crictl')} --config ${path.join(nodeDir, 'crictl.yaml')} exec -it ${containerId} sh -c '[ -t 0 ] && echo stdin-is-a-terminal; exec sh'`;
      const result = await run('script', ['-qec', command, '/dev/null'], { input: 'echo typed-$((40+2))\nexit 5\n', timeoutMs: 30_000 });
      expect(result.stdout).toContain('stdin-is-a-terminal');
      expect(result.stdout).toContain('typed-42');
      expect(result.stdout).toMatch(/command terminated with exit code 5/);
      await crictlOk('rmp', '--force', podId);
    });

    it('a container over its memory limit ends with 137 and reason OOMKilled', async () => {
      const { podId, containerId } = await runPod('oom', 'kts-runc', undefined, {
        command: ['sh', '-c', 'tail /dev/zero'], linux: { resources: { memory_limit_in_bytes: 24 * 1024 * 1024 } },
      });
      const status = await until('the container to be OOM-killed', async () => {
        const inspected = await json<{ status: { state: string; exitCode: number; reason: string } }>('inspect', containerId);
        return inspected.status.state === 'CONTAINER_EXITED' && inspected.status.reason === 'OOMKilled' ? inspected.status : undefined;
      }, 60_000);
      expect(status.exitCode).toBe(137);
      await crictlOk('rmp', '--force', podId);
    });

    it('with a shared pod pid namespace, what a container forked dies with it, so stop and stopp return at once', async () => {
      const { podId, containerId } = await runPod('podpid', 'kts-runc', undefined, { command: ['sh', '-c', 'sleep 600 & sleep 600 & exec sleep 1'] }, {
        linux: { security_context: { namespace_options: { pid: 0 } } },
      });
      await until('the main process to exit', async () => (await json<ContainerStatus>('inspect', containerId)).status.state === 'CONTAINER_EXITED');
      const started = performance.now();
      await crictlOk('stopp', podId);
      expect(performance.now() - started).toBeLessThan(30_000);
      await crictlOk('rmp', podId);
    });
  });

  describe.skipIf(skipVm)(`the vmm kind${skipVm ? ` (skipped: ${skipVm})` : ''}`, () => {
    it('exec -s returns with the output, and stop and stopp finish: the guest\'s output FIFOs end when its processes do', async () => {
      const { podId, containerId, ms } = await runPod('vm', 'kts-vmm', undefined, { command: ['sh', '-c', 'echo hello from the vm; exec sleep 3600'] });
      console.log(`crictl runp+create+start (kts-vmm): ${ms.toFixed(0)} ms`);
      await until('the container\'s output in crictl logs', async () => (await crictlOk('logs', containerId)).includes('hello from the vm'), 60_000);
      const exec = await run(path.join(PEERS_BIN, 'crictl'), ['--config', path.join(nodeDir, 'crictl.yaml'), 'exec', '-s', containerId, 'echo', 'from-exec'], { timeoutMs: 60_000 });
      expect(exec.code).toBe(0);
      expect(exec.stdout).toContain('from-exec');
      await crictlOk('stop', '--timeout', '5', containerId);
      expect((await json<ContainerStatus>('inspect', containerId)).status.state).toBe('CONTAINER_EXITED');
      await crictlOk('stopp', podId);
      await crictlOk('rmp', podId);
      expect(ktsPods().some((p) => p.id === podId)).toBe(false);
    }, 240_000);
  });

  describe('the wasm kind', () => {
    it('runs a WASI module from an image containerd imported: its output in crictl logs, its exit code in inspect', async () => {
      const { podId, containerId, ms } = await runPod('wasm', 'kts-wasm', 'docker.io/library/wasm-hello:latest', { args: ['3'] });
      console.log(`crictl runp+create+start (kts-wasm): ${ms.toFixed(0)} ms`);
      expect((await json<PodStatus>('inspectp', podId)).status.state).toBe('SANDBOX_READY');
      const exited = await until('the module to exit', async () => {
        const status = (await json<ContainerStatus>('inspect', containerId)).status;
        return status.state === 'CONTAINER_EXITED' && status;
      });
      expect(exited.exitCode).toBe(3);
      expect(await crictlOk('logs', containerId)).toContain('hello from wasm');
      await crictlOk('rm', containerId);
      await crictlOk('rmp', '--force', podId);
      expect(ktsPods().some((p) => p.id === podId)).toBe(false);
    });
  });

  describe('restarts', () => {
    it('containerd restarted while kts runs: it recovers its pods from kts, they stay READY, their containers keep running', async () => {
      const { podId, containerId } = await runPod('survivor', 'kts-runc');
      const containerPid = Number(JSON.parse(daemon.ktsOk('ps', '--json', '--pod', podId))[0].pid);
      process.kill(containerdPid(), 'SIGTERM');
      await until('containerd to exit', () => !isAlive(containerdPid()));
      await node('up');
      expect((await json<PodStatus>('inspectp', podId)).status.state).toBe('SANDBOX_READY');
      expect((await json<ContainerStatus>('inspect', containerId)).status.state).toBe('CONTAINER_RUNNING');
      expect(isAlive(containerPid)).toBe(true);
      const exec = await crictl('exec', '-s', containerId, 'echo', 'after-containerd-restart');
      expect(exec.stdout).toContain('after-containerd-restart');
      await crictlOk('rmp', '--force', podId);
      expect(ktsPods().some((p) => p.id === podId)).toBe(false);
    });

    it('kts SIGKILLed and restarted while containerd runs: pods stay READY, a new pod starts, nothing is duplicated', async () => {
      const { podId, containerId } = await runPod('through-crash', 'kts-runc');
      const containerPid = Number(JSON.parse(daemon.ktsOk('ps', '--json', '--pod', podId))[0].pid);
      await daemon.kill();
      await daemon.start();
      // containerd's sandbox proxy redials with a backoff of at most 3 s.
      await until('containerd to reach kts again', async () => (await crictl('inspectp', podId)).code === 0, 15_000);
      expect((await json<PodStatus>('inspectp', podId)).status.state).toBe('SANDBOX_READY');
      expect(isAlive(containerPid)).toBe(true);
      const fresh = await runPod('after-crash', 'kts-runc');
      expect(await crictlOk('ps', '-q', '--pod', fresh.podId, '--state', 'Running')).toBe(fresh.containerId);
      const criPods = (await crictlOk('pods', '-q')).split('\n').filter(Boolean).sort();
      const kts = ktsPods().map((p) => p.id).sort();
      expect(new Set(criPods).size).toBe(criPods.length);
      expect(kts).toEqual(criPods);
      for (const id of [podId, fresh.podId]) await crictlOk('rmp', '--force', id);
      expect(containerId).not.toBe('');
    });

    // containerd 2.4 takes the end of a task connection for the death of the shim (cleanupAfterDeadShim:
    // a TaskExit of 255 for each container on it); the task relay keeps that connection open meanwhile.
    it('kts SIGKILLed and restarted while containerd runs: exec into a container started before still works', async () => {
      const { podId, containerId } = await runPod('exec-through-crash', 'kts-runc');
      try {
        await daemon.kill();
        await daemon.start();
        await until('containerd to reach kts again', async () => (await crictl('inspectp', podId)).code === 0, 15_000);
        const exec = await crictl('exec', '-s', containerId, 'echo', 'after-kts-restart');
        expect(exec.stderr).toBe('');
        expect(exec.stdout).toContain('after-kts-restart');
        expect((await json<ContainerStatus>('inspect', containerId)).status.state).toBe('CONTAINER_RUNNING');
        // containerd's Wait, sent to the daemon that died, was sent again to the new one: the exit arrives.
        await crictlOk('stop', '--timeout', '1', containerId);
        const stopped = (await json<ContainerStatus>('inspect', containerId)).status;
        expect(stopped.state).toBe('CONTAINER_EXITED');
        expect([128 + 15, 128 + 9]).toContain(stopped.exitCode); // its own exit by SIGTERM or SIGKILL, not containerd's 255
      } finally {
        await crictlOk('rmp', '--force', podId);
      }
    });
  });

  describe('down', () => {
    it('leaves no containerd, no mount under its directory and no bridge', async () => {
      const pid = containerdPid();
      await node('down');
      expect(isAlive(pid)).toBe(false);
      expect(mountsUnder(nodeDir + path.sep)).toEqual([]);
      expect((await run('ip', ['link', 'show', BRIDGE])).code).not.toBe(0);
      expect(ktsPods().map((p) => `${p.name} ${p.state}`)).toEqual([]);
    });
  });
});

describe.skipIf(process.arch !== 'x64')('examples/containerd', () => {
  it('holds exactly what scripts/containerd-node.sh config writes for the default node directory', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kts-ctd-example-'));
    try {
      const written = await run('bash', [NODE_SCRIPT, 'config'], { env: { KTS_CTD_DIR: path.join(dir, 'node') } });
      expect(written.code).toBe(0);
      for (const [generated, example] of [['containerd.toml', 'containerd.toml'], ['cni/10-kts-containerd.conflist', '10-kts-containerd.conflist'], ['crictl.yaml', 'crictl.yaml']]) {
        const text = readFileSync(path.join(dir, 'node', generated!), 'utf8').replaceAll(path.join(dir, 'node'), '/var/lib/kts-containerd');
        expect(text, example).toBe(readFileSync(path.join(REPO, 'examples/containerd', example!), 'utf8'));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
