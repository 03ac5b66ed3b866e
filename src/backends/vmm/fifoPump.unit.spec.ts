// The host pumps against a share a hostile guest writes: they read only beneath the share, resume from
// the daemon's own records after a restart, and keep the share file's disk use bounded.
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BeneathBatch, beneathBinary, openBeneath } from '../host/beneath.js';
import { FifoPumps, type ShareAccess } from './fifoPump.js';
import { fifoReader } from './fifoReader.testkit.js';

const skip = !existsSync(beneathBinary()) ? `needs ${beneathBinary()} (bash scripts/build-native.sh)` : undefined;

const until = async (what: string, probe: () => boolean, ms = 5000) => {
  for (const deadline = Date.now() + ms; !probe(); await new Promise((resolve) => setTimeout(resolve, 20))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
};

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
});
