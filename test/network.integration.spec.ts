// Pod networking end to end with the real CNI plugins (Debian's containernetworking-plugins): runc
// pods on kts's bridge network, a VM pod mirrored onto the same bridge, removal and crash recovery
// leaving nothing behind. Traffic stays on addresses this test owns: a bridge and subnet it names
// (10.88.213.0/24 on ktsit0), the pods' netns it makes, and nothing else; every ping is -c 1 -W 1.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers, canRunVms, isAlive, mountsUnder, qemuProcessesUnder, until } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';

const CNI_BIN_DIR = '/usr/lib/cni';
const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';
const BRIDGE = 'ktsit0';
const SUBNET_PREFIX = '10.88.213';
const GATEWAY = `${SUBNET_PREFIX}.1`;

const CONTAINER_YAML = path.join(REPO, 'examples/busybox.yaml');

function canRunCni(): string | undefined {
  const base = canRunContainers();
  if (base) return base;
  if (!existsSync(path.join(CNI_BIN_DIR, 'bridge')) || !existsSync(path.join(CNI_BIN_DIR, 'host-local'))) {
    return `needs the CNI plugins in ${CNI_BIN_DIR} (apt-get install containernetworking-plugins; scripts/setup.sh does)`;
  }
  return undefined;
}

const skip = canRunCni();
const skipVm = skip ?? canRunVms();

interface Pod { podId: string; containerId: string }
interface PodRow { id: string; state: string; ips: string[]; netnsPath: string }

/** Host state a pod network could leave behind. */
interface Leftovers {
  netnsDirs: string[];
  nsfsMounts: string[];
  bridgePorts: string[];
  ipamAllocations: string[];
}

describe.skipIf(skip)(`pod networking with CNI${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const scratch = mkdtempSync(path.join(tmpdir(), 'kts-net-'));
  const ipamDir = path.join(scratch, 'ipam');
  const networkToml = [
    '[network]', 'cni = true', `cni_conf_dir = "${path.join(scratch, 'cni-conf')}"`, `cni_bin_dir = "${CNI_BIN_DIR}"`,
    `network_name = "kts-it"`, `bridge = "${BRIDGE}"`, `subnet = "${SUBNET_PREFIX}.0/24"`, `ipam_data_dir = "${ipamDir}"`,
    '[hypervisor]', `guest_dir = "${GUEST_DIR}"`, 'accelerator = "tcg"', 'boot_deadline_seconds = 120',
  ].join('\n');
  const daemon = new TestDaemon(networkToml);
  const ipForwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8');
  let podA: Pod;
  let podB: Pod;

  beforeAll(async () => {
    await daemon.start();
  });

  afterAll(async () => {
    await daemon.cleanup();
    // The bridge plugin makes the bridge and turns on forwarding; neither is undone by CNI DEL.
    spawnSync('ip', ['link', 'del', BRIDGE], { stdio: 'ignore' });
    writeFileSync('/proc/sys/net/ipv4/ip_forward', ipForwardBefore);
    rmSync(scratch, { recursive: true, force: true });
  });

  const run = (...flags: string[]): Pod => JSON.parse(daemon.ktsOk('run', '--json', ...flags, freshPodYaml(), CONTAINER_YAML)) as Pod;
  const podRows = (): PodRow[] => JSON.parse(daemon.ktsOk('pods', '-o', 'json')) as PodRow[];
  const podIp = (pod: Pod): string => podRows().find((row) => row.id === pod.podId)!.ips[0]!;
  const exec = (pod: Pod, ...args: string[]) => daemon.kts('exec', pod.containerId, '--', ...args);

  /** One ping, -c 1 -W 1, tried at most three times (a VM under TCG may miss the first while it ARPs). */
  async function pings(from: Pod, address: string): Promise<boolean> {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (exec(from, 'ping', '-c', '1', '-W', '1', address).code === 0) return true;
    }
    return false;
  }

  function leftovers(): Leftovers {
    const networkDir = path.join(daemon.root, 'network');
    const allocationsDir = path.join(ipamDir, 'kts-it');
    const ports = JSON.parse(execFileSync('ip', ['-j', 'link', 'show', 'master', BRIDGE], { encoding: 'utf8' }) || '[]') as Array<{ ifname: string }>;
    return {
      netnsDirs: existsSync(networkDir) ? readdirSync(networkDir) : [],
      nsfsMounts: mountsUnder(daemon.root),
      bridgePorts: ports.map((port) => port.ifname),
      // host-local keeps one file per allocated address, named by it, beside its lock and last_reserved_ip files.
      ipamAllocations: existsSync(allocationsDir) ? readdirSync(allocationsDir).filter((name) => name.startsWith(`${SUBNET_PREFIX}.`)) : [],
    };
  }
  const nothingLeft: Leftovers = { netnsDirs: [], nsfsMounts: [], bridgePorts: [], ipamAllocations: [] };

  it('given a daemon running CNI, when two runc pods are run, then each gets an address on the bridge and they ping each other and the gateway', async () => {
    podA = run();
    podB = run();
    const [ipA, ipB] = [podIp(podA), podIp(podB)];
    expect(ipA).toMatch(new RegExp(`^${SUBNET_PREFIX.replaceAll('.', '\\.')}\\.\\d+$`));
    expect(ipB).toMatch(new RegExp(`^${SUBNET_PREFIX.replaceAll('.', '\\.')}\\.\\d+$`));
    expect(ipA).not.toBe(ipB);
    expect(exec(podA, 'ip', '-4', 'addr', 'show', 'eth0').stdout).toContain(`inet ${ipA}/24`);
    expect(await pings(podA, ipB)).toBe(true);
    expect(await pings(podB, ipA)).toBe(true);
    expect(await pings(podA, GATEWAY)).toBe(true);
    expect(leftovers().bridgePorts).toHaveLength(2);
    expect(leftovers().ipamAllocations.sort()).toEqual([ipA, ipB].sort());
  });

  it('shows the pod IPs in `kts pods -o wide` and the network setup, as recorded events, in `kts inspect`', () => {
    const wide = daemon.ktsOk('pods', '-o', 'wide');
    expect(wide.split('\n')[0]).toMatch(/POD ID\s+NAME\s+NAMESPACE\s+KIND\s+STATE\s+IP\s+NETNS\s+CREATED/);
    expect(wide).toContain(podIp(podA));
    const inspected = JSON.parse(daemon.ktsOk('inspect', podA.podId)) as { state: string; network: { netnsPath: string; network: string; interfaceName: string; status: { ips: Array<{ address: string; gateway: string }>; routes: Array<{ dst: string }> } } };
    expect(inspected.state).toBe('ready');
    expect(inspected.network).toMatchObject({ netnsPath: path.join(daemon.root, 'network', podA.podId, 'netns'), network: 'kts-it', interfaceName: 'eth0' });
    expect(inspected.network.status.ips).toEqual([expect.objectContaining({ address: `${podIp(podA)}/24`, gateway: GATEWAY })]);
    expect(inspected.network.status.routes).toEqual([{ dst: '0.0.0.0/0' }]);
    const history = JSON.parse(daemon.ktsOk('history', '--json', podA.podId)) as { events: Array<{ type: string }> };
    const types = history.events.map((event) => event.type);
    expect(types.slice(0, 5)).toEqual(['SandboxCreated', 'SandboxStartRequested', 'SandboxNetworkRequested', 'SandboxNetworkConfigured', 'SandboxStarted']);
  });

  it('given `kts run --network none`, when the pod runs on the CNI daemon, then it has loopback only and no address is allocated', () => {
    const before = leftovers().ipamAllocations.length;
    const pod = run('--network', 'none');
    const links = exec(pod, 'ip', '-o', 'link').stdout.trim().split('\n');
    expect(links).toHaveLength(1);
    expect(links[0]).toContain('lo:');
    expect(podRows().find((row) => row.id === pod.podId)!.ips).toEqual([]);
    expect(leftovers().ipamAllocations).toHaveLength(before);
    daemon.ktsOk('rm', pod.podId);
  });

  describe.skipIf(skipVm)(`a VM pod on the same bridge${skipVm ? ` (skipped: ${skipVm})` : ''}`, () => {
    let vmPod: Pod;

    beforeAll(() => {
      execFileSync('bash', [path.join(REPO, 'scripts/build-guest.sh'), GUEST_DIR], {
        stdio: 'ignore', timeout: 900_000, env: { ...process.env, KTS_GUEST_AGENT_DIR: path.join(REPO, 'dist/agent') },
      });
    }, 900_000);

    it('given the bridge, when a VM pod is run, then its guest has the pod IP and it pings the gateway and a runc pod, and back', async () => {
      vmPod = run('--runtime', 'vmm');
      const ip = podIp(vmPod);
      const guestAddresses = exec(vmPod, 'ip', 'addr');
      expect(guestAddresses.code).toBe(0);
      expect(guestAddresses.stdout).toContain(`inet ${ip}/24`);
      // Inside the guest the NIC has the MAC CNI gave the pod's veth, so the bridge sees one host per pod.
      const inspected = JSON.parse(daemon.ktsOk('inspect', vmPod.podId)) as { backend: Record<string, string> };
      const mac = /^eth0 (\S+) /.exec(inspected.backend['guest.interfaces'] ?? '')?.[1];
      expect(mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      expect(guestAddresses.stdout).toContain(`link/ether ${mac}`);
      expect(await pings(vmPod, GATEWAY)).toBe(true);
      expect(await pings(vmPod, podIp(podA))).toBe(true);
      expect(await pings(podA, ip)).toBe(true);
    });

    it('when the VM pod is removed, then its QEMU, taps, netns, veth and address are gone', () => {
      const qemuPid = podRowsWithPid().find((row) => row.id === vmPod.podId)!.pid;
      const netnsPath = podRows().find((row) => row.id === vmPod.podId)!.netnsPath;
      const ip = podIp(vmPod);
      daemon.ktsOk('rm', vmPod.podId);
      expect(isAlive(qemuPid)).toBe(false);
      expect(existsSync(netnsPath)).toBe(false);
      expect(leftovers().ipamAllocations).not.toContain(ip);
      expect(leftovers().bridgePorts).toHaveLength(2);
    });

    it('given a daemon killed while a VM pod boots (taps made, guest not up), when it restarts, then recovery removes the VM, its taps and its network', async () => {
      const before = leftovers();
      const starting = daemon.ktsAsync('run', '--runtime', 'vmm', '--json', freshPodYaml(), CONTAINER_YAML);
      const vmsDir = path.join(daemon.root, 'vms');
      const vmDir = await until('a VM with its network plan', () => existsSync(vmsDir) && readdirSync(vmsDir).find((id) => existsSync(path.join(vmsDir, id, 'network.json'))), 60_000);
      await daemon.kill();
      await starting;
      await daemon.start();
      const pod = JSON.parse(daemon.ktsOk('inspect', vmDir)) as { state: string };
      expect(pod.state).toBe('failed');
      expect(existsSync(path.join(daemon.root, 'vms', vmDir))).toBe(false);
      // Killed during the launch, the daemon may not have recorded the QEMU it started: recovery finds it anyway.
      expect(qemuProcessesUnder(daemon.root)).toEqual([]);
      expect(leftovers()).toEqual(before);
      daemon.ktsOk('rm', vmDir);
    });

    function podRowsWithPid(): Array<{ id: string; pid: number }> {
      return JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; pid: number }>;
    }
  });

  it('when the runc pods are removed, then no netns, veth or IPAM allocation is left', () => {
    daemon.ktsOk('rm', podA.podId);
    daemon.ktsOk('rm', podB.podId);
    expect(leftovers()).toEqual(nothingLeft);
  });

  describe('crash during creation', () => {
    // Counted from a fresh daemon with no pods: `kts run` records SandboxCreated (outcome 1), SandboxStartRequested
    // (intent 1), SandboxNetworkRequested (intent 2), runs CNI ADD (effect 1), records SandboxNetworkConfigured
    // (outcome 2), starts the sandbox (effect 2) and records SandboxStarted (outcome 3).
    it.each([
      ['intent.after_commit:2', 'the network intent is committed, before the netns exists'],
      ['effect.after:1', 'CNI ADD has run, before its result is recorded'],
      ['outcome.after_commit:2', 'the CNI result is recorded, before the sandbox starts'],
      ['effect.before:2', 'just before the sandbox process is launched'],
    ])('given a crash at %s (%s), when the daemon restarts, then recovery rolls the start back and no network is left', async (crashAt) => {
      expect(podRows()).toEqual([]);
      await daemon.stop();
      await daemon.start({ KTS_CRASH_AT: crashAt });
      const result = daemon.kts('run', '--json', freshPodYaml(), CONTAINER_YAML);
      expect(result.code).not.toBe(0);
      await daemon.exited();
      expect(daemon.logs).toContain(`crash point ${crashAt.split(':')[0]} reached`);
      await daemon.start();
      const [pod] = podRows();
      expect(pod?.state).toBe('failed');
      expect(leftovers()).toEqual(nothingLeft);
      daemon.ktsOk('rm', pod!.id);
      expect(leftovers()).toEqual(nothingLeft);
    });
  });

  it('given a lost database, when the daemon starts, then the orphan sweep tears down the pod network it finds and records that', async () => {
    const pod = run();
    expect(leftovers().ipamAllocations).toEqual([podIp(pod)]);
    await daemon.kill();
    for (const suffix of ['', '-wal', '-shm']) rmSync(`${daemon.db}${suffix}`, { force: true });
    await daemon.start();
    expect(leftovers()).toEqual(nothingLeft);
    const db = new Database(daemon.db, { readonly: true });
    try {
      const orphans = db.prepare(`SELECT payload FROM events WHERE stream_id = 'node' AND type = 'OrphanRemoved'`).all() as Array<{ payload: string }>;
      expect(orphans.map((row) => JSON.parse(row.payload) as { kind: string; resource: string })).toContainEqual(
        expect.objectContaining({ kind: 'network', resource: expect.stringContaining(`pod network of ${pod.podId}`) }));
    } finally {
      db.close();
    }
  });
});

describe.skipIf(skip)(`a daemon without CNI${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  beforeAll(() => daemon.start());
  afterAll(() => daemon.cleanup());

  it('given `kts run --network cni`, when the daemon does not run CNI, then the run is refused and says how to turn it on', () => {
    const result = daemon.kts('run', '--network', 'cni', freshPodYaml(), CONTAINER_YAML);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('this daemon does not run CNI (set [network] cni = true)');
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
  });

  it('given a pod without a netns, when it runs, then it has a fresh netns with loopback only, as before', () => {
    const pod = JSON.parse(daemon.ktsOk('run', '--json', freshPodYaml(), CONTAINER_YAML)) as Pod;
    const links = daemon.ktsOk('exec', pod.containerId, '--', 'ip', '-o', 'link').trim().split('\n');
    expect(links).toHaveLength(1);
    expect(existsSync(path.join(daemon.root, 'network'))).toBe(false);
  });
});
