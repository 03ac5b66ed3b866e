import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { headFileOf } from './audit/config.js';
import { loadConfig } from './config.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kts-config-host-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const configFile = (text: string) => {
  const file = path.join(dir, `c-${Math.random().toString(16).slice(2)}.toml`);
  writeFileSync(file, text);
  return file;
};

describe('daemon config: runc root, socket group, [logs], [audit]', () => {
  it('puts the default runc root under the daemon\'s root, so two roots mean two runc roots', () => {
    expect(loadConfig(undefined, { root: '/srv/a' }).runc.root).toBe('/srv/a/runc');
    expect(loadConfig(undefined, { root: '/srv/b' }).runc.root).toBe('/srv/b/runc');
    expect(loadConfig(configFile('root = "/srv/c"\n')).runc.root).toBe('/srv/c/runc');
    expect(loadConfig(configFile('[runc]\nroot = "/run/custom"\n'), { root: '/srv/d' }).runc.root).toBe('/run/custom');
  });

  it('defaults: socket root only, logs 10 MiB checked every second, nothing redacted', () => {
    const config = loadConfig(undefined, { root: '/srv/kts' });
    expect(config.socketGroup).toBeNull();
    expect(config.logs).toEqual({ maxBytes: 10 * 1024 * 1024, rotateIntervalSeconds: 1 });
    expect(config.audit).toEqual({
      redactAnnotations: [], redactLabels: [], checkpointEvery: 1000, keyFile: '/srv/kts/audit/ed25519.key', retainDays: 0, retainEvents: 0, archiveDir: '/srv/kts/audit/archive',
    });
  });

  it('reads socket_group, [logs] and [audit]', () => {
    const config = loadConfig(configFile([
      'socket_group = "kts"',
      '[logs]', 'max_bytes = 1048576', 'rotate_interval_seconds = 5',
      '[audit]', 'redact_annotations = ["secret.example/token", "vault.example/*"]', 'redact_labels = ["password"]',
    ].join('\n')));
    expect(config.socketGroup).toBe('kts');
    expect(config.logs).toEqual({ maxBytes: 1048576, rotateIntervalSeconds: 5 });
    expect(config.audit).toMatchObject({ redactAnnotations: ['secret.example/token', 'vault.example/*'], redactLabels: ['password'] });
  });

  it('reads [audit] checkpoint_every and key_file; head.json lives beside the key', () => {
    const config = loadConfig(configFile('[audit]\ncheckpoint_every = 50\nkey_file = "/etc/kts/audit.key"\n'));
    expect(config.audit).toMatchObject({ checkpointEvery: 50, keyFile: '/etc/kts/audit.key' });
    expect(headFileOf(config.audit.keyFile)).toBe('/etc/kts/head.json');
  });

  it('reads [audit] retention: retain_days, retain_events, archive_dir', () => {
    const config = loadConfig(configFile('[audit]\nretain_days = 30\nretain_events = 100000\narchive_dir = "/backup/kts"\n'));
    expect(config.audit).toMatchObject({ retainDays: 30, retainEvents: 100000, archiveDir: '/backup/kts' });
  });

  it.each([
    ['socket_group = ""', 'socket_group must be a group name or a numeric gid'],
    ['[logs]\nmax_bytes = 100', 'logs.max_bytes must be at least 4096'],
    ['[logs]\nmax_bytes = "10M"', 'logs.max_bytes must be a positive integer'],
    ['[logs]\nkeep = 3', 'unknown key "logs.keep"'],
    ['[audit]\nredact_annotations = "token"', 'audit.redact_annotations must be an array'],
    ['[audit]\nredact_labels = ["a*b"]', 'audit.redact_labels must be an array of keys or "prefix*" patterns'],
    ['[audit]\nredact_env = []', 'unknown key "audit.redact_env"'],
    ['[audit]\ncheckpoint_every = 0', 'audit.checkpoint_every must be a positive integer'],
    ['[audit]\nkey_file = ""', 'audit.key_file must be a non-empty string'],
    ['[audit]\nretain_days = -1', 'audit.retain_days must be a whole number (0: off), not -1'],
    ['[audit]\nretain_events = "1000"', 'audit.retain_events must be a whole number (0: off), not "1000"'],
  ])('refuses %s', (text, message) => {
    expect(() => loadConfig(configFile(text))).toThrow(message);
  });
});
