import { describe, expect, it } from 'vitest';
import type { OciSpec } from '../../oci/containerSpec.js';
import { containerPlan, envRecord, processPlan } from './wasmProgram.js';

const MIB = 1024 * 1024;

function spec(overrides: Partial<OciSpec> = {}): OciSpec {
  return { ociVersion: '1.0.2', process: { args: ['/hello.wasm'], cwd: '/' }, root: { path: 'rootfs' }, ...overrides };
}

describe('containerPlan', () => {
  it('given a spec with a memory limit, then the cap is the limit in whole 64 KiB pages', () => {
    expect(containerPlan(spec({ linux: { resources: { memory: { limit: MIB + 100 } } } }), '/b', 512 * MIB).memoryLimitPages).toBe(16);
  });

  it('given no memory limit, or -1 (unlimited in OCI), then the daemon\'s default applies', () => {
    expect(containerPlan(spec(), '/b', 512 * MIB).memoryLimitPages).toBe(8192);
    expect(containerPlan(spec({ linux: { resources: { memory: { limit: -1 } } } }), '/b', 8 * MIB).memoryLimitPages).toBe(128);
  });

  it('resolves the rootfs against the bundle and keeps only bind mounts, with their read-only flag and no trailing slash', () => {
    const plan = containerPlan(spec({
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/data/', type: 'bind', source: '/srv/data', options: ['rbind', 'ro'] },
        { destination: '/cache', source: '/srv/cache', options: ['rbind', 'rw'] },
      ],
    }), '/run/bundle', MIB);
    expect(plan.rootfs).toBe('/run/bundle/rootfs');
    expect(plan.mounts).toEqual([
      { guestPath: '/data', hostPath: '/srv/data', readonly: true },
      { guestPath: '/cache', hostPath: '/srv/cache', readonly: false },
    ]);
  });

  it('refuses a bind mount without an absolute source', () => {
    expect(() => containerPlan(spec({ mounts: [{ destination: '/data', type: 'bind', source: 'data' }] }), '/b', MIB)).toThrow(/needs an absolute source/);
  });
});

describe('processPlan', () => {
  it('names the module by args[0], resolved against cwd when relative, and passes args and env through', () => {
    expect(processPlan({ args: ['/hello.wasm', '7'], env: ['A=1', 'B=x=y'], cwd: '/' })).toEqual({
      args: ['/hello.wasm', '7'], env: { A: '1', B: 'x=y' }, modulePath: '/hello.wasm',
    });
    expect(processPlan({ args: ['bin/app.wasm'], cwd: '/opt' }).modulePath).toBe('/opt/bin/app.wasm');
  });

  it('refuses a process without args', () => {
    expect(() => processPlan({ args: [] })).toThrow(/process.args must name the module/);
  });
});

describe('envRecord', () => {
  it('lets a later KEY win and skips entries without a name', () => {
    expect(envRecord(['A=1', 'A=2', '=x', 'NOEQUALS'])).toEqual({ A: '2' });
  });
});
