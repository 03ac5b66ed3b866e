import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive, until } from './helpers/daemon.js';

const repoRoot = join(import.meta.dirname, '..');
/** Built (and cached by its stamp) by scripts/build-guest.sh; gitignored. */
const guestDir = join(repoRoot, '.kts/guest');

function onPath(command: string): boolean {
  try {
    execFileSync('which', [command], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const skipReason =
  process.getuid?.() !== 0 ? 'needs root (scripts/build-guest.sh installs packages and builds a root-owned image)'
  : !onPath('qemu-system-x86_64') && !onPath('apt-get') ? 'needs qemu-system-x86_64 (or apt-get to install it)'
  : !onPath('node') ? 'needs node on PATH (it is copied into the guest)'
  : undefined;
if (skipReason) console.warn(`guestBoot.integration.spec.ts skipped: ${skipReason}`);

/**
 * Under TCG the guest TSC runs at the host's TSC rate, and calibrating it against the emulated PIT fails
 * now and then (the kernel then hangs): telling the kernel the rate skips the calibration.
 */
function hostTscKhz(): number {
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1];
  if (!mhz) throw new Error('no "cpu MHz" in /proc/cpuinfo');
  return Math.round(Number(mhz) * 1000);
}

function qemuArgs(dir: string): string[] {
  const kernel = existsSync(join(guestDir, 'vmlinux')) ? join(guestDir, 'vmlinux') : join(guestDir, 'vmlinuz');
  return [
    '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=on',
    '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', kernel, '-initrd', join(guestDir, 'initrd.img'),
    '-append', `console=ttyS0 quiet panic=-1 cryptomgr.notests tsc_early_khz=${hostTscKhz()}`,
    '-serial', `file:${join(dir, 'console.log')}`,
    '-drive', `file=${join(guestDir, 'rootfs.img')},if=none,id=root,format=raw,readonly=on`,
    '-device', 'virtio-blk-device,drive=root',
    '-fsdev', `local,id=share,path=${join(dir, 'share')},security_model=none,multidevs=remap`,
    '-device', 'virtio-9p-device,fsdev=share,mount_tag=kts-share',
    '-chardev', `socket,id=agent,path=${join(dir, 'agent.sock')},server=on,wait=off`,
    '-device', 'virtio-serial-device',
    '-device', 'virtserialport,chardev=agent,name=kts.agent',
    '-qmp', `unix:${join(dir, 'qmp.sock')},server=on,wait=off`,
  ];
}

/** A line-oriented client of one unix socket: send a line, await the next line that comes back. */
class LineConnection {
  private buffered = '';
  private waiters: Array<{ resolve: (line: string) => void; reject: (error: Error) => void }> = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      for (let newline = this.buffered.indexOf('\n'); newline >= 0; newline = this.buffered.indexOf('\n')) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        this.waiters.shift()?.resolve(line);
      }
    });
    // A peer that exits (QEMU after quit) may reset the connection: pending reads fail on 'close'.
    socket.on('error', () => {});
    socket.on('close', () => {
      for (const waiter of this.waiters.splice(0)) waiter.reject(new Error('connection closed'));
    });
  }

  static open(path: string): Promise<LineConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new LineConnection(socket));
      });
    });
  }

  nextLine(timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        resolve: (line) => (clearTimeout(timer), resolve(line)),
        reject: (error) => (clearTimeout(timer), reject(error)),
      });
    });
  }

  ask(line: string, timeoutMs = 20_000): Promise<string> {
    const reply = this.nextLine(timeoutMs);
    this.socket.write(`${line}\n`);
    return reply;
  }

  close(): Promise<void> {
    if (this.socket.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
    });
  }
}

describe.skipIf(skipReason !== undefined)('microVM guest image booted by QEMU (-M microvm, TCG)', () => {
  let workDir: string;
  let qemu: ChildProcess;
  let qemuExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let qemuOutput = '';
  let bootStartedAt: number;
  const sharedText = `shared from the host ${process.pid}\nsecond line\n`;

  const consoleLog = (): string => {
    try {
      return readFileSync(join(workDir, 'console.log'), 'utf8');
    } catch {
      return '';
    }
  };

  beforeAll(() => {
    const build = execFileSync('bash', [join(repoRoot, 'scripts/build-guest.sh'), guestDir], { encoding: 'utf8', timeout: 900_000 });
    console.info(build.trim());
    workDir = mkdtempSync('/tmp/kts-guest-it-');
    mkdirSync(join(workDir, 'share'));
    writeFileSync(join(workDir, 'share/hello.txt'), sharedText);
    bootStartedAt = Date.now();
    qemu = spawn('qemu-system-x86_64', qemuArgs(workDir), { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu.stdout!.on('data', (chunk) => (qemuOutput += chunk));
    qemu.stderr!.on('data', (chunk) => (qemuOutput += chunk));
    qemuExit = new Promise((resolve) => qemu.once('exit', (code, signal) => resolve({ code, signal })));
  });

  afterAll(async () => {
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      qemu.kill('SIGKILL');
      await qemuExit;
    }
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  it('given the built image, when QEMU boots it, then the console shows KTS-GUEST-READY from guest/init', async () => {
    const ready = await until('KTS-GUEST-READY on the console', () => {
      if (qemu.exitCode !== null) throw new Error(`QEMU exited with ${qemu.exitCode}: ${qemuOutput}\nconsole:\n${consoleLog()}`);
      return /^KTS-GUEST-READY (\d+\.\d+)/m.exec(consoleLog()) ?? undefined;
    }, 30_000).catch((error: Error) => {
      throw new Error(`${error.message}\nconsole:\n${consoleLog()}`);
    });
    console.info(`guest ready ${Date.now() - bootStartedAt} ms after QEMU was spawned (guest uptime ${ready[1]} s)`);
    expect(Number(ready[1])).toBeGreaterThan(0);
    expect(consoleLog()).not.toContain('FATAL');
  });

  it('given a booted guest, when the host sends a line on the kts.agent port, then the agent echoes it', async () => {
    const agent = await LineConnection.open(join(workDir, 'agent.sock'));
    try {
      expect(await agent.ask('hello guest')).toBe('echo hello guest');
      console.info(`first echo ${Date.now() - bootStartedAt} ms after QEMU was spawned`);
      expect(await agent.ask('and again')).toBe('echo and again');
    } finally {
      await agent.close();
    }
  });

  it('given the host disconnected, when it connects again, then the agent answers on the new connection', async () => {
    const lastAgentStatus = () => [...consoleLog().matchAll(/standin-agent: host (connected|disconnected)/g)].at(-1)?.[1];
    // The agent read EOF for the connection the previous test closed: this is a real reconnect.
    await until('the agent seeing the host disconnect', () => lastAgentStatus() === 'disconnected', 10_000);
    const agent = await LineConnection.open(join(workDir, 'agent.sock'));
    try {
      expect(await agent.ask('after reconnect')).toBe('echo after reconnect');
    } finally {
      await agent.close();
    }
    expect(consoleLog()).toMatch(/host disconnected[^]*host connected/);
  });

  it('given a 9p share tagged kts-share with a file, when the host asks the agent to cat it, then the reply is its content', async () => {
    const agent = await LineConnection.open(join(workDir, 'agent.sock'));
    try {
      expect(await agent.ask('cat /run/kts/share/hello.txt')).toBe(`cat ${JSON.stringify(sharedText)}`);
      expect(await agent.ask('cat /run/kts/share/missing.txt')).toBe('error ENOENT');
    } finally {
      await agent.close();
    }
  });

  it('given a running guest, when QMP quit is sent, then QEMU exits and leaves no process behind', async () => {
    const qmp = await LineConnection.open(join(workDir, 'qmp.sock'));
    expect(JSON.parse(await qmp.nextLine(5_000))).toHaveProperty('QMP');
    expect(JSON.parse(await qmp.ask('{"execute":"qmp_capabilities"}', 5_000))).toEqual({ return: {} });
    const quitReply = JSON.parse(await qmp.ask('{"execute":"quit"}', 5_000)) as Record<string, unknown>;
    // QEMU may announce the SHUTDOWN event before it answers the command.
    expect(quitReply.return ?? quitReply.event).toBeDefined();
    await qmp.close();

    const exit = await Promise.race([qemuExit, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 10_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(isAlive(qemu.pid!)).toBe(false);
    const survivors = readdirSync('/proc').filter((pid) => /^\d+$/.test(pid)).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(workDir);
      } catch {
        return false;
      }
    });
    expect(survivors).toEqual([]);
  });
});
