import { describe, expect, it } from 'vitest';
import { pagesText } from './moduleMemory.js';

describe('pagesText', () => {
  it('names pages with their size in MiB, to two decimals when not whole', () => {
    expect(pagesText(16)).toBe('16 pages (1 MiB)');
    expect(pagesText(1)).toBe('1 page (0.06 MiB)');
    expect(pagesText(0)).toBe('0 pages (0 MiB)');
  });
});
