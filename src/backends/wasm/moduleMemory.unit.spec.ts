import { describe, expect, it } from 'vitest';
import { capModuleMemory, encodeLeb } from './moduleMemory.js';

// Modules assembled by hand: header, then sections of [id, size, content].
const HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const section = (id: number, content: number[]) => [id, ...encodeLeb(content.length), ...content];
const name = (text: string) => [text.length, ...Buffer.from(text)];
/** Limits: [flags, initial] or [flags, initial, maximum], LEB-encoded. */
const limits = (initial: number, maximum?: number) => (maximum === undefined ? [0x00, ...encodeLeb(initial)] : [0x01, ...encodeLeb(initial), ...encodeLeb(maximum)]);
const memorySection = (...memories: number[][]) => section(5, [memories.length, ...memories.flat()]);
const exportMemory = section(7, [1, ...name('memory'), 0x02, 0]);
const customSection = (text: string) => section(0, [...name('note'), ...Buffer.from(text)]);
const moduleOf = (...sections: number[][]) => Uint8Array.from([...HEADER, ...sections.flat()]);

function memoryOf(bytes: Uint8Array): WebAssembly.Memory {
  return new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.memory as WebAssembly.Memory;
}

describe('capModuleMemory', () => {
  it('given a memory without a maximum, when capped at 16 pages, then the engine refuses to grow it past 16 pages', () => {
    const capped = capModuleMemory(moduleOf(memorySection(limits(1)), exportMemory), 16);
    expect(capped.memories).toEqual([{ initialPages: 1, maximumPages: 16 }]);
    const memory = memoryOf(capped.bytes);
    expect(memory.grow(15)).toBe(1);
    expect(() => memory.grow(1)).toThrow(RangeError);
  });

  it('given a declared maximum below the cap, then the module keeps its own maximum', () => {
    const capped = capModuleMemory(moduleOf(memorySection(limits(2, 4)), exportMemory), 16);
    expect(capped.memories).toEqual([{ initialPages: 2, maximumPages: 4 }]);
    expect(() => memoryOf(capped.bytes).grow(3)).toThrow(RangeError);
  });

  it('given a declared maximum above the cap, then it is lowered to the cap', () => {
    const capped = capModuleMemory(moduleOf(memorySection(limits(1, 1000)), exportMemory), 8);
    expect(capped.memories).toEqual([{ initialPages: 1, maximumPages: 8 }]);
  });

  it('given a memory that needs more than the cap at start, then the module is refused with both sizes named', () => {
    expect(() => capModuleMemory(moduleOf(memorySection(limits(32))), 16)).toThrow(
      'the module needs 32 pages (2 MiB) of memory at start, more than the container\'s memory limit of 16 pages (1 MiB)',
    );
  });

  it('copies every other section byte for byte, before and after the memory section', () => {
    const before = customSection('before');
    const after = customSection('after');
    const capped = capModuleMemory(moduleOf(before, memorySection(limits(1)), exportMemory, after), 300);
    const expected = moduleOf(before, memorySection(limits(1, 300)), exportMemory, after);
    expect([...capped.bytes]).toEqual([...expected]);
    expect(WebAssembly.validate(capped.bytes)).toBe(true);
  });

  it('given a module that defines no memory, then it is returned as it is', () => {
    const bytes = moduleOf(customSection('no memory'));
    expect(capModuleMemory(bytes, 16)).toEqual({ bytes, memories: [] });
  });

  it('refuses a file that is not WebAssembly, and a component, saying which', () => {
    expect(() => capModuleMemory(Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), 16)).toThrow(/does not start with the "\\0asm" magic number/);
    expect(() => capModuleMemory(Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]), 16)).toThrow(/not a core WebAssembly module of version 1/);
  });

  it('refuses a section that runs past the end of the module', () => {
    const truncated = moduleOf(memorySection(limits(1))).subarray(0, HEADER.length + 3);
    expect(() => capModuleMemory(truncated, 16)).toThrow(/not a valid WebAssembly module/);
  });
});
