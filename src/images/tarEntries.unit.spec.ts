import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listTarEntries, normaliseEntryPath } from './tarEntries.js';

let workDir: string;
const longDir = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`;

beforeAll(async () => {
  workDir = await mkdtemp(path.join(tmpdir(), 'kts-tar-'));
  const src = path.join(workDir, 'src');
  await mkdir(path.join(src, longDir), { recursive: true });
  await writeFile(path.join(src, longDir, `${'g'.repeat(120)}.txt`), 'long');
  await writeFile(path.join(src, 'small'), 'x'.repeat(1000));
  await symlink(`../${'t'.repeat(150)}`, path.join(src, 'link'));
  // ustar has no long names: a path over 100 bytes goes through its prefix field instead.
  const ustarSrc = path.join(workDir, 'ustar');
  await mkdir(path.join(ustarSrc, `${'p'.repeat(70)}/${'r'.repeat(70)}`), { recursive: true });
  await writeFile(path.join(ustarSrc, `${'p'.repeat(70)}/${'r'.repeat(70)}`, 'q'.repeat(50)), 'prefixed');
  await writeFile(path.join(ustarSrc, 'small'), 'x'.repeat(1000));
  await symlink('../short', path.join(ustarSrc, 'link'));
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** Feeds the archive in odd-sized chunks so headers straddle chunk boundaries. */
async function* chunked(bytes: Buffer, size: number): AsyncIterable<Buffer> {
  for (let offset = 0; offset < bytes.length; offset += size) yield bytes.subarray(offset, offset + size);
}

describe('listTarEntries', () => {
  it.each(['gnu', 'pax', 'ustar', 'oldgnu'])('lists what GNU tar lists for --format=%s', async (format) => {
    const archive = path.join(workDir, `${format}.tar`);
    const srcDir = path.join(workDir, format === 'ustar' ? 'ustar' : 'src');
    execFileSync('tar', ['--sort=name', `--format=${format}`, '-C', srcDir, '-cf', archive, '.']);
    const expected = execFileSync('tar', ['-tf', archive], { encoding: 'utf8' }).trim().split('\n').map(normaliseEntryPath);
    const entries = await listTarEntries(chunked(await readFile(archive), 333));
    expect(entries.map((entry) => entry.path)).toEqual(expected);
    const link = entries.find((entry) => entry.path === 'link');
    expect(link).toMatchObject({ type: 'symlink', linkPath: format === 'ustar' ? '../short' : `../${'t'.repeat(150)}` });
    expect(entries.some((entry) => entry.path.length > 150 && entry.type === 'file')).toBe(true);
    expect(entries.find((entry) => entry.path === 'small')).toMatchObject({ type: 'file', size: 1000 });
  });

  it('refuses a truncated archive and a bad checksum', async () => {
    const archive = path.join(workDir, 'cut.tar');
    execFileSync('tar', ['-C', path.join(workDir, 'src'), '-cf', archive, 'small']);
    const bytes = await readFile(archive);
    await expect(listTarEntries(chunked(bytes.subarray(0, 700), 512))).rejects.toThrow(/truncated/);
    const corrupted = Buffer.from(bytes);
    corrupted[10] ^= 0x01;
    await expect(listTarEntries(chunked(corrupted, 4096))).rejects.toThrow(/checksum/);
  });
});

describe('normaliseEntryPath', () => {
  it('strips "./" and trailing slashes, refuses escapes', () => {
    expect(normaliseEntryPath('./bin/sh')).toBe('bin/sh');
    expect(normaliseEntryPath('./')).toBe('');
    expect(normaliseEntryPath('etc//passwd/')).toBe('etc/passwd');
    expect(() => normaliseEntryPath('/etc/passwd')).toThrow(/absolute/);
    expect(() => normaliseEntryPath('a/../../b')).toThrow(/escapes/);
  });
});
