// Where a node process spent its CPU, from the .cpuprofile that `node --cpu-prof` writes at exit:
// self time by part of the program (our code, each npm package, node's internals, GC) and the
// functions with the most self time.
import { readFileSync } from 'node:fs';

/** Which part of the program a profile node's script belongs to. */
function partOf(url, functionName) {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return `npm:${pkg[1]}`;
  const own = /\/dist\/(src\/[^/]+|machines|agent)\//.exec(url);
  if (own) return `kts:${own[1]}`;
  if (url.startsWith('node:')) return 'node internals';
  return url.replace(/^file:\/\//, '');
}

/**
 * Self time by part and by function. `window` ({ fromUs, toUs }, process.hrtime in µs: V8 stamps
 * samples with the same monotonic clock) keeps only the samples taken within it.
 */
export function summarizeCpuProfile(file, { top = 15, window } = {}) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const fromUs = window?.fromUs ?? profile.startTime;
  const toUs = window?.toUs ?? profile.endTime;
  const selfMs = new Map();
  let at = profile.startTime;
  profile.samples.forEach((id, i) => {
    at += profile.timeDeltas[i] ?? 0;
    if (at >= fromUs && at <= toUs) selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  const totalMs = (Math.min(toUs, profile.endTime) - Math.max(fromUs, profile.startTime)) / 1000;
  const parts = new Map();
  const functions = new Map();
  for (const [id, ms] of selfMs) {
    const { callFrame } = byId.get(id);
    const part = partOf(callFrame.url, callFrame.functionName);
    parts.set(part, (parts.get(part) ?? 0) + ms);
    const name = `${callFrame.functionName || '(anonymous)'} ${callFrame.url.split('/').slice(-2).join('/')}:${callFrame.lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + ms);
  }
  const ranked = (map, n) => [...map].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, ms]) => ({ name, ms: Math.round(ms), share: Math.round((ms / totalMs) * 1000) / 1000 }));
  return { total_ms: Math.round(totalMs), parts: ranked(parts, 20), functions: ranked(functions, top) };
}
