import { describe, expect, it } from 'vitest';
import { CriLineSplitter, formatCriTime, MAX_RECORD_TEXT_BYTES, parseCriRecord, parseRfc3339Nanos } from './criLog.js';

const TIME = '2026-12-03T10:04:05.123456789Z';
const splitter = () => new CriLineSplitter('stdout', () => TIME);
const text = (records: Buffer[]) => records.map((record) => record.toString('latin1'));

describe('CRI log records', () => {
  it('formats a time as RFC3339 with nine fraction digits in UTC', () => {
    expect(formatCriTime(new Date(Date.UTC(2026, 11, 3, 10, 4, 5, 7)), 42)).toBe('2026-12-03T10:04:05.007000042Z');
  });

  it.each([
    ['2026-12-03T10:04:05Z', 1796292245000000000n],
    ['2026-12-03T10:04:05.5Z', 1796292245500000000n],
    ['2026-12-03T10:04:05.123456789Z', 1796292245123456789n],
    ['2026-12-03T11:04:05+01:00', 1796292245000000000n],
    ['2026-12-03T09:34:05-00:30', 1796292245000000000n],
  ])('reads %s as %d ns', (time, nanos) => {
    expect(parseRfc3339Nanos(time)).toBe(nanos);
  });

  it.each(['', 'yesterday', '2026-12-03', '2026-12-03T10:04:05', '2026-02-31T10:04:05Z', '2026-12-03T24:00:00Z', '2026-12-03T10:04:05.1234567891Z'])('refuses %j as a time', (time) => {
    expect(parseRfc3339Nanos(time)).toBeUndefined();
  });

  it('parses records, F and P, stdout and stderr, an empty text, and text with spaces and binary bytes', () => {
    expect(parseCriRecord(Buffer.from(`${TIME} stdout F hello world`))).toMatchObject({ time: TIME, stream: 'stdout', partial: false, text: Buffer.from('hello world') });
    expect(parseCriRecord(Buffer.from(`${TIME} stderr P  two`))).toMatchObject({ stream: 'stderr', partial: true, text: Buffer.from(' two') });
    expect(parseCriRecord(Buffer.from(`${TIME} stdout F`))?.text.length).toBe(0);
    expect(parseCriRecord(Buffer.from(`${TIME} stdout F `))?.text.length).toBe(0);
    const binary = Buffer.concat([Buffer.from(`${TIME} stdout F `), Buffer.from([0, 0xff, 0x0d, 0x20])]);
    expect(parseCriRecord(binary)?.text).toEqual(Buffer.from([0, 0xff, 0x0d, 0x20]));
  });

  it.each(['plain output', `${TIME} stdin F x`, `${TIME} stdout X x`, `${TIME} stdout Fx`, `not-a-time-at-all-here stdout F x`, `line 3 of output`])('takes %j for no record', (line) => {
    expect(parseCriRecord(Buffer.from(line))).toBeUndefined();
  });
});

describe('CriLineSplitter (a stream into records)', () => {
  it('makes one F record a complete line and holds the unfinished rest', () => {
    const lines = splitter();
    expect(text(lines.push(Buffer.from('a\nb\nunfin')))).toEqual([`${TIME} stdout F a\n`, `${TIME} stdout F b\n`]);
    expect(lines.heldBytes).toBe(5);
    expect(text(lines.push(Buffer.from('ished\n')))).toEqual([`${TIME} stdout F unfinished\n`]);
    expect(lines.flush()).toEqual([]);
  });

  it('writes what is left at a pause as a P record, the empty line as an empty F record', () => {
    const lines = splitter();
    expect(lines.push(Buffer.from('prompt> '))).toEqual([]);
    expect(text(lines.flush())).toEqual([`${TIME} stdout P prompt> \n`]);
    expect(text(lines.push(Buffer.from('\n')))).toEqual([`${TIME} stdout F \n`]);
  });

  it('splits a huge line without newline into bounded P records, whatever the chunks', () => {
    const lines = splitter();
    const records: Buffer[] = [];
    for (let i = 0; i < 64; i++) records.push(...lines.push(Buffer.alloc(16 * 1024 + 7, 'x')));
    records.push(...lines.flush());
    const parsed = records.map((record) => parseCriRecord(record.subarray(0, -1))!);
    expect(parsed.every((record) => record.partial && record.text.length <= MAX_RECORD_TEXT_BYTES)).toBe(true);
    expect(parsed.reduce((sum, record) => sum + record.text.length, 0)).toBe(64 * (16 * 1024 + 7));
    expect(lines.heldBytes).toBe(0);
  });
});
