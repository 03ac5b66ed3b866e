import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KTS_VERSION } from './version.js';

describe('KTS_VERSION', () => {
  it('is the version package.json states', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(KTS_VERSION).toBe(pkg.version);
  });
});
