import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bridgeNetworkConfig, cniAdd, cniDel, loadCniConfigDir, parseCniConfig, parseCniResult, pluginError } from './cni.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kts-cni-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const attachment = { containerId: 'pod-1', netnsPath: '/var/lib/kts/network/pod-1/netns', interfaceName: 'eth0' };

/** A stand-in plugin: logs its CNI_* variables and stdin, prints `result` (or fails with the spec's error object). */
function fakePlugin(binDir: string, type: string, result: object, fail = false): string {
  const log = path.join(binDir, `${type}.log`);
  const script = path.join(binDir, type);
  writeFileSync(script, [
    '#!/bin/sh',
    `{ echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_PATH"; cat; echo; } >> '${log}'`,
    fail ? `echo '{"code": 11, "msg": "no addresses left", "details": "range 10.88.0.0/30 is full"}'; exit 1` : `echo '${JSON.stringify(result)}'`,
  ].join('\n'));
  chmodSync(script, 0o755);
  return log;
}

function logLines(log: string): string[] {
  return readFileSync(log, 'utf8').split('\n').filter(Boolean);
}

const RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'kts0', mac: '0a:58:0a:58:00:01' }, { name: 'eth0', mac: '0a:58:0a:58:00:05', sandbox: attachment.netnsPath }],
  ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 1 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }],
  dns: { nameservers: ['10.88.0.1'] },
};

describe('CNI configuration', () => {
  it('given bridge settings, when built, then it is a 1.0.0 list with a gateway bridge and host-local addresses, masquerade off', () => {
    expect(bridgeNetworkConfig({ name: 'kts', bridge: 'kts0', subnet: '10.88.0.0/16', mtu: 0, ipMasq: false, ipamDataDir: '/srv/ipam' })).toEqual({
      cniVersion: '1.0.0', name: 'kts', plugins: [{
        type: 'bridge', bridge: 'kts0', isGateway: true, ipMasq: false, hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/16' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: '/srv/ipam' },
      }],
    });
  });

  it('given a single-plugin .conf, when parsed, then it is a list of one with the file\'s name and version', () => {
    expect(parseCniConfig({ cniVersion: '0.4.0', name: 'net', type: 'bridge', bridge: 'br0' }, 'x.conf')).toEqual({
      cniVersion: '0.4.0', name: 'net', plugins: [{ cniVersion: '0.4.0', name: 'net', type: 'bridge', bridge: 'br0' }],
    });
  });

  it.each([
    [[], 'must be a JSON object'],
    [{ name: 'a b', plugins: [{ type: 'bridge' }] }, 'name must be'],
    [{ name: 'net', plugins: [] }, 'has no plugins'],
    [{ name: 'net', plugins: [{ type: '../../bin/sh' }] }, '"type" must name a plugin binary'],
  ])('given %j, when parsed, then it is refused: %s', (json, message) => {
    expect(() => parseCniConfig(json, 'x.conflist')).toThrow(message);
  });

  it('given a directory with several configs and other files, when loaded, then the first config by name is the network', async () => {
    const confDir = mkdtempSync(path.join(dir, 'conf-'));
    writeFileSync(path.join(confDir, '20-b.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'b', plugins: [{ type: 'bridge' }] }));
    writeFileSync(path.join(confDir, '10-a.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'a', type: 'ptp' }));
    writeFileSync(path.join(confDir, '00-readme.txt'), 'not a config');
    const loaded = await loadCniConfigDir(confDir);
    expect(loaded?.file).toBe(path.join(confDir, '10-a.conf'));
    expect(loaded?.config.name).toBe('a');
    expect(await loadCniConfigDir(path.join(dir, 'missing'))).toBeUndefined();
  });
});

describe('running CNI plugins', () => {
  it('given a list of two plugins, when ADD, then each runs with the CNI_* variables and the one before\'s result as prevResult', async () => {
    const binDir = mkdtempSync(path.join(dir, 'bin-'));
    const bridgeLog = fakePlugin(binDir, 'bridge', RESULT);
    const tuningLog = fakePlugin(binDir, 'tuning', { ...RESULT, dns: {} });
    const list = { cniVersion: '1.0.0', name: 'kts', plugins: [{ type: 'bridge', bridge: 'kts0' }, { type: 'tuning' }] };
    const result = await cniAdd(list, attachment, { binDirs: [path.join(dir, 'none'), binDir], timeoutMs: 5000 });
    const [bridgeEnv, bridgeStdin] = logLines(bridgeLog);
    expect(bridgeEnv).toBe(`ADD pod-1 ${attachment.netnsPath} eth0 ${path.join(dir, 'none')}:${binDir}`);
    expect(JSON.parse(bridgeStdin!)).toEqual({ type: 'bridge', bridge: 'kts0', cniVersion: '1.0.0', name: 'kts' });
    expect(JSON.parse(logLines(tuningLog)[1]!).prevResult).toEqual(RESULT);
    expect(result).toEqual({ ...RESULT, dns: {} });
  });

  it('given an ADD result, when DEL, then the plugins run in reverse order, each with the result as prevResult', async () => {
    const binDir = mkdtempSync(path.join(dir, 'bin-'));
    const order = path.join(binDir, 'order.log');
    for (const type of ['bridge', 'tuning']) {
      fakePlugin(binDir, type, {});
      writeFileSync(path.join(binDir, type), readFileSync(path.join(binDir, type), 'utf8').replace('#!/bin/sh', `#!/bin/sh\necho ${type} >> '${order}'`));
    }
    const list = { cniVersion: '1.0.0', name: 'kts', plugins: [{ type: 'bridge' }, { type: 'tuning' }] };
    await cniDel(list, { ...attachment, netnsPath: '' }, { binDirs: [binDir], timeoutMs: 5000 }, RESULT);
    expect(logLines(order)).toEqual(['tuning', 'bridge']);
    const [env, stdin] = logLines(path.join(binDir, 'bridge.log'));
    expect(env).toBe(`DEL pod-1  eth0 ${binDir}`);
    expect(JSON.parse(stdin!).prevResult).toEqual(RESULT);
  });

  it('given a plugin that fails with the spec\'s error object, when ADD, then the error says the plugin, its message and details', async () => {
    const binDir = mkdtempSync(path.join(dir, 'bin-'));
    fakePlugin(binDir, 'bridge', {}, true);
    const list = { cniVersion: '1.0.0', name: 'kts', plugins: [{ type: 'bridge' }] };
    await expect(cniAdd(list, attachment, { binDirs: [binDir], timeoutMs: 5000 })).rejects.toThrow(
      'CNI ADD of plugin bridge for pod-1 failed: no addresses left: range 10.88.0.0/30 is full (CNI error code 11)');
  });

  it('given a plugin that is nowhere on the path, when ADD, then the error names it and the package that has it', async () => {
    const list = { cniVersion: '1.0.0', name: 'kts', plugins: [{ type: 'nosuchplugin' }] };
    await expect(cniAdd(list, attachment, { binDirs: [dir], timeoutMs: 5000 })).rejects.toThrow('CNI plugin "nosuchplugin" is not in');
  });

  it('shows raw output when a plugin prints no error object', () => {
    expect(pluginError('', 'panic: boom\n', 2)).toBe('panic: boom');
    expect(pluginError('', '', 2)).toBe('exit status 2');
  });
});

describe('CNI results', () => {
  it('given a 1.0.0 result, when parsed, then interfaces, IPs, routes and DNS are kept in the spec\'s field names', () => {
    expect(parseCniResult(RESULT)).toEqual({
      interfaces: RESULT.interfaces, ips: RESULT.ips, routes: RESULT.routes, dns: { nameservers: ['10.88.0.1'] },
    });
  });

  it('given a 0.2.0 result, when parsed, then its ip4 becomes an IP and its routes', () => {
    expect(parseCniResult({ ip4: { ip: '10.1.0.5/24', gateway: '10.1.0.1', routes: [{ dst: '0.0.0.0/0' }] } })).toEqual({
      interfaces: [], ips: [{ address: '10.1.0.5/24', gateway: '10.1.0.1' }], routes: [{ dst: '0.0.0.0/0' }],
    });
  });

  it('given no result object, when parsed, then it is an error', () => {
    expect(() => parseCniResult('ok')).toThrow('the CNI result is not a JSON object');
  });
});
