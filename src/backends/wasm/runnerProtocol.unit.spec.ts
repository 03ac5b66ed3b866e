import { describe, expect, it } from 'vitest';
import { encodeEnv, MAX_REPORT_LINE_BYTES, parseReport, ReportLines } from './runnerProtocol.js';

describe('parseReport', () => {
  it('given each line a runner sends, then it is read as that report', () => {
    expect(parseReport('ready')).toEqual({ type: 'ready' });
    expect(parseReport('refused not a regular file')).toEqual({ type: 'refused', reason: 'not a regular file' });
    expect(parseReport('memory 17')).toEqual({ type: 'memory', initialPages: 17 });
    expect(parseReport('exited 7')).toEqual({ type: 'exited', code: 7 });
    expect(parseReport('exited -1')).toEqual({ type: 'exited', code: -1 });
    expect(parseReport('trapped 16 wasm `unreachable` instruction executed')).toEqual({ type: 'trapped', memoryPages: 16, message: 'wasm `unreachable` instruction executed' });
    expect(parseReport('failed host error')).toEqual({ type: 'failed', message: 'host error' });
  });

  it('given a malformed or unknown line, then nothing is read from it', () => {
    for (const line of ['', 'exited', 'exited seven', 'exited 99999999999999', 'trapped x boom', 'memory -1', 'hello 1']) expect(parseReport(line)).toBeUndefined();
  });
});

describe('encodeEnv', () => {
  it('given an environment, then KEY=value entries each end in NUL and an empty entry ends the block', () => {
    expect(encodeEnv({ A: '1', B: 'x=y' }).toString()).toBe('A=1\0B=x=y\0\0');
    expect(encodeEnv({}).toString()).toBe('\0');
  });

  it('given a NUL byte or a name with "=", then it is refused, not cut into another variable', () => {
    expect(() => encodeEnv({ A: 'x\0B=2' })).toThrow(/cannot be passed/);
    expect(() => encodeEnv({ 'A=B': '1' })).toThrow(/cannot be passed/);
  });
});

describe('ReportLines', () => {
  it('given lines split across chunks, then each whole line comes out once', () => {
    const lines = new ReportLines();
    expect(lines.push(Buffer.from('rea'))).toEqual([]);
    expect(lines.push(Buffer.from('dy\nexited 3\ntra'))).toEqual(['ready', 'exited 3']);
    expect(lines.push(Buffer.from('pped 1 x\n'))).toEqual(['trapped 1 x']);
  });

  it('given a runner that never ends its line, then no more than the cap is held', () => {
    const lines = new ReportLines();
    for (let i = 0; i < 10; i++) lines.push(Buffer.alloc(64 * 1024, 'a'));
    const [line] = lines.push(Buffer.from('\n'));
    expect(line).toHaveLength(MAX_REPORT_LINE_BYTES);
  });
});
