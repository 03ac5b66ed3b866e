import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tailStart } from './logStream.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kts-tail-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(content: string | Buffer): string {
  const name = path.join(dir, `log-${n++}`);
  writeFileSync(name, content);
  return name;
}

describe('tailStart (kts logs --tail)', () => {
  it.each([
    ['a\nb\nc\n', 2, 'b\nc\n', 0],
    ['a\nb\nc', 2, 'b\nc', 0],
    ['a\nb\nc\n', 3, 'a\nb\nc\n', 0],
    ['a\nb\nc\n', 5, 'a\nb\nc\n', 2],
    ['a\nb\nc\n', 0, '', 0],
    ['', 2, '', 2],
    ['\n\n', 1, '\n', 0],
  ])('given %j, the last %d lines are %j, %d short', (content, lines, expected, missing) => {
    const log = file(content);
    const start = tailStart(log, lines);
    return start.then((result) => {
      expect(Buffer.from(content).subarray(result.offset).toString()).toBe(expected);
      expect(result.missing).toBe(missing);
    });
  });

  it('finds the lines across the blocks it reads backwards', async () => {
    const lines = Array.from({ length: 20000 }, (_, i) => `line ${i} ${'x'.repeat(i % 50)}`);
    const content = lines.join('\n') + '\n';
    const result = await tailStart(file(content), 12345);
    expect(content.slice(result.offset)).toBe(lines.slice(-12345).join('\n') + '\n');
  });

  it('wants every line from before a file that does not exist (rotated away)', async () => {
    expect(await tailStart(path.join(dir, 'missing'), 4)).toEqual({ offset: 0, missing: 4 });
  });
});
