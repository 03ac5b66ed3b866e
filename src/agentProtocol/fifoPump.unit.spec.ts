// The host pumps against a share a hostile guest writes: they read only beneath the share, resume from
// the daemon's own records after a restart, and keep the share file's disk use bounded.
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, mkdirSync, openSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BeneathBatch, beneathBinary, openBeneath } from '../host/beneath.js';
import { FifoPumps, FileToFifoPump, type ShareAccess } from './fifoPump.js';
import { fifoReader } from './fifoReader.testkit.js';
import { parseCriRecord } from '../host/criLog.js';

/** The CRI records in a log file. */
const logRecords = (file: string) => readFileSync(file).toString('latin1').split('\n').filter((line) => line !== '').map((line) => parseCriRecord(Buffer.from(line, 'latin1'))!);

const skip = !existsSync(beneathBinary()) ? `needs ${beneathBinary()} (bash scripts/build-native.sh)` : undefined;

const until = async (what: string, probe: () => boolean, ms = 5000) => {
  for (const deadline = Date.now() + ms; !probe(); await new Promise((resolve) => setTimeout(resolve, 20))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
};

/** A reader that sees end of file, as containerd's copy does: `cat` on the FIFO; `ended` settles with what it read. */
function catFifo(fifo: string) {
  execFileSync('mkfifo', [fifo]);
  const cat = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  let done = false;
  cat.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
  const ended = new Promise<string>((resolve) => cat.on('close', () => { done = true; resolve(text); }));
  return { ended, isDone: () => done, got: () => text, kill: () => cat.kill() };
}

describe.skipIf(skip)(`host pumps over a hostile share${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let dir: string;
  let share: string;
  let access: ShareAccess;
  const closers: Array<() => void> = [];
  const pumpsList: FifoPumps[] = [];
  const newPumps = () => {
    const pumps = new FifoPumps(path.join(dir, 'pumps'), access);
    pumpsList.push(pumps);
    return pumps;
  };

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kts-pump-'));
    share = path.join(dir, 'share');
    mkdirSync(path.join(share, 'c', 'one', 'exec', 'e1'), { recursive: true });
    access = {
      shareDir: share,
      open: (source, flags) => openBeneath(share, source, flags),
      release: (source, offset) => new BeneathBatch(share).punch(source, offset).run(),
      releaseEveryBytes: 256 * 1024,
    };
  });
  afterEach(async () => {
    for (const pumps of pumpsList.splice(0)) await pumps.stopAll();
    for (const close of closers.splice(0)) close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('forwards what the guest appends, and after a restart resumes from the recorded offset (happy path)', async () => {
    const source = 'c/one/exec/e1/stdout';
    writeFileSync(path.join(share, source), 'first\n');
    const reader = fifoReader(path.join(dir, 'fifo'));
    closers.push(reader.close);
    const before = newPumps();
    before.start(source, path.join(dir, 'fifo'));
    await until('the first line', () => reader.got.text === 'first\n');
    await before.stopAll();
    appendFileSync(path.join(share, source), 'second\n');
    expect(await newPumps().resume()).toBe(1);
    await until('the second line', () => reader.got.text === 'first\nsecond\n');
  });

  it('into a CRI log: each line a timed record, an unfinished one a P record when the file pauses, resumed after a restart without loss', async () => {
    const source = 'c/one/stdout';
    mkdirSync(path.join(share, 'c', 'one'), { recursive: true });
    writeFileSync(path.join(share, source), 'first\nhalf');
    const log = path.join(dir, 'container.log');
    writeFileSync(log, '');
    const text = () => logRecords(log).map((record) => `${record.stream} ${record.partial ? 'P' : 'F'} ${record.text.toString()}`);
    const before = newPumps();
    before.start(source, log, 0, 'stdout');
    await until('the first line and the unfinished one', () => text().length === 2);
    expect(text()).toEqual(['stdout F first', 'stdout P half']);
    await before.stopAll();
    appendFileSync(path.join(share, source), ' done\n');
    expect(await newPumps().resume()).toBe(1);
    await until('the rest of the line', () => text().length === 3);
    expect(text()).toEqual(['stdout F first', 'stdout P half', 'stdout F  done']);
    for (const record of logRecords(log)) expect(Math.abs(Number(record.unixNanos / 1_000_000n) - Date.now())).toBeLessThan(10_000);
  });

  it('after a restart, a pump whose directory the guest swapped for a link to another share reads nothing from it', async () => {
    const source = 'c/one/exec/e1/stdout';
    writeFileSync(path.join(share, source), 'first\n');
    const reader = fifoReader(path.join(dir, 'fifo'));
    closers.push(reader.close);
    const before = newPumps();
    before.start(source, path.join(dir, 'fifo'));
    await until('the first line', () => reader.got.text === 'first\n');
    await before.stopAll();
    const elsewhere = path.join(dir, 'another-vm', 'share', 'e1');
    mkdirSync(elsewhere, { recursive: true });
    writeFileSync(path.join(elsewhere, 'stdout'), 'SECRET\n'.repeat(100));
    renameSync(path.join(share, 'c/one/exec/e1'), path.join(share, 'c/one/exec/moved'));
    symlinkSync(elsewhere, path.join(share, 'c/one/exec/e1'));
    await newPumps().resume();
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(reader.got.text).toBe('first\n');
  });

  it('frees the disk blocks of what it forwarded: 4 MiB pass, the share file keeps about releaseEveryBytes', async () => {
    const source = 'c/one/exec/e1/stdout';
    writeFileSync(path.join(share, source), '');
    const reader = fifoReader(path.join(dir, 'fifo'));
    closers.push(reader.close);
    newPumps().start(source, path.join(dir, 'fifo'));
    const chunk = Buffer.alloc(512 * 1024, 'a');
    for (let i = 0; i < 8; i++) appendFileSync(path.join(share, source), chunk);
    await until('4 MiB through the FIFO', () => reader.got.bytes === 8 * chunk.length, 20_000);
    expect(statSync(path.join(share, source)).size).toBe(8 * chunk.length);
    expect(statSync(path.join(share, source)).blocks * 512).toBeLessThanOrEqual(2 * access.releaseEveryBytes);
  });

  it('when a process exits, its reader gets everything the guest wrote, then end of file; an exec ends without its container', async () => {
    const container = 'c/one/stdout';
    const exec = 'c/one/exec/e1/stdout';
    writeFileSync(path.join(share, container), 'container-1\n');
    writeFileSync(path.join(share, exec), 'exec-1\n');
    const containerReader = catFifo(path.join(dir, 'container-fifo'));
    const execReader = catFifo(path.join(dir, 'exec-fifo'));
    closers.push(containerReader.kill, execReader.kill);
    const pumps = newPumps();
    pumps.start(container, path.join(dir, 'container-fifo'));
    pumps.start(exec, path.join(dir, 'exec-fifo'));
    await until('the first lines', () => containerReader.got() === 'container-1\n' && execReader.got() === 'exec-1\n');
    // Written just before the exit, not yet polled: still forwarded before the end.
    appendFileSync(path.join(share, exec), 'exec-2\n');
    await pumps.stopUnder('c/one/exec/e1');
    expect(await execReader.ended).toBe('exec-1\nexec-2\n');
    expect(containerReader.isDone()).toBe(false);
    appendFileSync(path.join(share, container), 'container-2\n');
    await pumps.stopUnder('c/one');
    expect(await containerReader.ended).toBe('container-1\ncontainer-2\n');
  });

  it('a guest that keeps appending after its process exited does not hold the end up: what the file held at the exit is forwarded, then end of file', async () => {
    const source = 'c/one/stdout';
    writeFileSync(path.join(share, source), 'before-exit\n');
    const reader = catFifo(path.join(dir, 'fifo'));
    closers.push(reader.kill);
    const pumps = newPumps();
    pumps.start(source, path.join(dir, 'fifo'));
    await until('the first line', () => reader.got() === 'before-exit\n');
    const flood = setInterval(() => appendFileSync(path.join(share, source), Buffer.alloc(64 * 1024, 'x')), 2);
    try {
      const started = Date.now();
      await pumps.stopUnder('c/one');
      expect(Date.now() - started).toBeLessThan(2000);
      expect((await reader.ended).startsWith('before-exit\n')).toBe(true);
    } finally {
      clearInterval(flood);
    }
  });

  it('a reader that holds the FIFO and takes nothing does not hold the end up past the drain deadline', async () => {
    const source = path.join(share, 'c/one/stdout');
    writeFileSync(source, Buffer.alloc(1024 * 1024, 'y'));
    execFileSync('mkfifo', [path.join(dir, 'fifo')]);
    const stalled = openSync(path.join(dir, 'fifo'), constants.O_RDWR | constants.O_NONBLOCK);
    closers.push(() => closeSync(stalled));
    const pump = new FileToFifoPump(source, path.join(dir, 'fifo'), { stopDrainMs: 300 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = Date.now();
    await pump.stop();
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
