import { describe, expect, it } from 'vitest';
import { CriLogView } from './logView.js';

const T1 = '2026-12-03T10:00:01.000000000Z';
const T2 = '2026-12-03T10:00:02.000000000Z';
const T3 = '2026-12-03T10:00:03.000000000Z';
const LOG = [`${T1} stdout F one`, `${T1} stderr F oops`, `${T2} stdout P lo`, `${T2} stdout P n`, `${T3} stdout F g`, `${T3} stdout F last`].join('\n') + '\n';

/** What the view shows of `log` fed in chunks of `size` bytes. */
function show(options: ConstructorParameters<typeof CriLogView>[0], log: string | Buffer = LOG, size = 3): string {
  const view = new CriLogView(options);
  const bytes = Buffer.isBuffer(log) ? log : Buffer.from(log);
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(view.push(bytes.subarray(i, i + size)));
  out.push(view.end());
  return Buffer.concat(out).toString('latin1');
}

describe('CriLogView (what kts logs shows of a CRI log)', () => {
  it('shows the text, joining P records into their line', () => {
    expect(show({ timestamps: false })).toBe('one\noops\nlong\nlast\n');
  });

  it('with timestamps, puts the time of its first record before each line', () => {
    expect(show({ timestamps: true })).toBe(`${T1} one\n${T1} oops\n${T2} long\n${T3} last\n`);
  });

  it('with since, keeps the records written at or after it', () => {
    expect(show({ timestamps: false, sinceUnixNanos: 1796292003000000000n })).toBe('g\nlast\n');
  });

  it('shows a line that is no record as it is, and leaves it out when only recent lines are wanted', () => {
    const log = `cut by rotation\n${T3} stdout F last\n`;
    expect(show({ timestamps: false }, log)).toBe('cut by rotation\nlast\n');
    expect(show({ timestamps: false, sinceUnixNanos: 0n }, log)).toBe('last\n');
  });

  it('shows a record still being written (no newline yet) by its text so far, at the end only', () => {
    const view = new CriLogView({ timestamps: false });
    expect(view.push(Buffer.from(`${T1} stdout F done\n${T2} stdout F half`)).toString()).toBe('done\n');
    expect(view.end().toString()).toBe('half');
  });

  it('holds at most 1 MiB of a line without newline, then passes it through', () => {
    const view = new CriLogView({ timestamps: false });
    let shown = 0;
    for (let i = 0; i < 40; i++) shown += view.push(Buffer.alloc(64 * 1024, 'z')).length;
    expect(shown).toBeGreaterThan(1024 * 1024);
    expect(shown + view.end().length).toBe(40 * 64 * 1024);
  });
});
