#!/usr/bin/env node
// A picture of one trace as Jaeger stores it: fetches GET <jaeger>/api/traces/<id> (the JSON Jaeger's own
// UI reads), lays it out as a waterfall page of our own (the Jaeger built from the Go module proxy embeds
// no UI assets) and has headless Chromium screenshot that page. No dependencies beyond Node and chromium.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const HELP = `usage: node scripts/trace-picture.mjs --jaeger <queryUrl> --trace <traceId> --out <file.png> [options]

Fetches one trace from Jaeger's query API (GET <queryUrl>/api/traces/<traceId>, the JSON Jaeger's UI
reads), renders it as a self-contained HTML waterfall (one row per span in tree order, indented by
depth, "service: operation", a bar placed by start and scaled by duration, a colour per service, error
spans marked) and screenshots it with headless Chromium (apt-get install chromium).

  --jaeger <url>      Jaeger's query HTTP address, e.g. http://127.0.0.1:16686
  --trace <id>        the trace id (32 hex digits)
  --file <trace.json> read a saved /api/traces/<id> answer instead of asking Jaeger
  --out <file.png>    where the screenshot goes
  --html <file.html>  also keep the HTML page there (default: a temp file, removed afterwards)
  --title <text>      the page's heading (default: the root span's "service: operation")
  --wait <seconds>    poll until the trace is complete (every parent present) and its span count has
                      held for 2 s, for up to this long (default 0: take it as it is)
  -h, --help          this text`;

const ROW_HEIGHT = 22;
const HEADER_HEIGHT = 100;
const FOOTER_HEIGHT = 40;
const PAGE_WIDTH = 1400;
/** One colour per service, in order of first appearance; light enough to read a label on. */
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#9c755f', '#ff9da7', '#bab0ac', '#e15759'];

function fail(message) {
  console.error(`trace-picture: ${message}`);
  process.exit(1);
}

function parseCommandLine() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        jaeger: { type: 'string' }, trace: { type: 'string' }, file: { type: 'string' }, out: { type: 'string' },
        html: { type: 'string' }, title: { type: 'string' }, wait: { type: 'string', default: '0' }, help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (error) {
    fail(`${error.message} (--help for usage)`);
  }
  if (parsed.help) {
    console.log(HELP);
    process.exit(0);
  }
  if (!parsed.out) fail('--out <file.png> is required (--help for usage)');
  if (!parsed.file && !(parsed.jaeger && parsed.trace)) fail('give --jaeger <url> and --trace <id>, or --file <trace.json> (--help for usage)');
  const waitSeconds = Number(parsed.wait);
  if (!Number.isFinite(waitSeconds) || waitSeconds < 0) fail(`--wait takes seconds, not "${parsed.wait}"`);
  return { ...parsed, waitSeconds };
}

/** Jaeger's answer for one trace, or undefined while it has none (404 or empty `data`). */
async function fetchTrace(queryUrl, traceId) {
  const url = `${queryUrl.replace(/\/+$/, '')}/api/traces/${encodeURIComponent(traceId)}`;
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    fail(`Jaeger unreachable at ${queryUrl}: ${error.cause?.code ?? error.message}`);
  }
  if (response.status === 404) return undefined;
  if (!response.ok) fail(`GET ${url} answered ${response.status} ${response.statusText}`);
  const body = await response.json();
  return body.data?.[0];
}

/** Every CHILD_OF reference points at a span the trace holds (processes export in batches of their own). */
function isComplete(trace) {
  const ids = new Set(trace.spans.map((span) => span.spanID));
  return trace.spans.every((span) => (span.references ?? []).every((ref) => ref.refType !== 'CHILD_OF' || ids.has(ref.spanID)));
}

async function loadTrace({ jaeger, trace: traceId, file, waitSeconds }) {
  if (file) {
    const body = JSON.parse(readFileSync(file, 'utf8'));
    const trace = body.data?.[0] ?? body;
    if (!Array.isArray(trace.spans)) fail(`${file} holds no trace (expected Jaeger's /api/traces/<id> answer)`);
    return trace;
  }
  const deadline = Date.now() + waitSeconds * 1000;
  let stable = { count: -1, since: Date.now() };
  for (;;) {
    const trace = await fetchTrace(jaeger, traceId);
    const count = trace?.spans.length ?? 0;
    if (count !== stable.count) stable = { count, since: Date.now() };
    const settled = trace && isComplete(trace) && Date.now() - stable.since >= 2000;
    if (settled || (trace && waitSeconds === 0)) return trace;
    if (Date.now() >= deadline) {
      if (!trace) fail(`trace ${traceId} not found in Jaeger at ${jaeger}`);
      console.error(`trace-picture: trace ${traceId} still ${isComplete(trace) ? 'growing' : 'missing parents'} after ${waitSeconds} s; drawing its ${count} spans`);
      return trace;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** The spans in tree order (children by start time), each with its depth; a span whose parent is missing is a root. */
function treeOrder(trace) {
  const byId = new Map(trace.spans.map((span) => [span.spanID, span]));
  const children = new Map();
  const roots = [];
  for (const span of trace.spans) {
    const parentId = (span.references ?? []).find((ref) => ref.refType === 'CHILD_OF' && byId.has(ref.spanID))?.spanID;
    if (parentId) children.set(parentId, [...(children.get(parentId) ?? []), span]);
    else roots.push(span);
  }
  const byStart = (a, b) => a.startTime - b.startTime || a.operationName.localeCompare(b.operationName);
  const rows = [];
  const visit = (span, depth) => {
    rows.push({ span, depth });
    for (const child of (children.get(span.spanID) ?? []).sort(byStart)) visit(child, depth + 1);
  };
  for (const root of roots.sort(byStart)) visit(root, 0);
  return rows;
}

/** Attributes worth seeing beside a span's name without opening it (a VM's accelerator: a KVM launch that failed, then TCG). */
const HINT_TAGS = ['hypervisor.accelerator'];
const ERROR_TEXT_MAX = 110;

const tagOf = (span, key) => (span.tags ?? []).find((tag) => tag.key === key)?.value;
const isError = (span) => tagOf(span, 'error') === true || tagOf(span, 'otel.status_code') === 'ERROR';
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const ms = (micros) => (micros >= 10_000 ? `${(micros / 1000).toFixed(0)} ms` : `${(micros / 1000).toFixed(1)} ms`);

const CSS = `
  * { box-sizing: border-box; }
  body { margin: 0; width: ${PAGE_WIDTH}px; font: 12px/1.3 "DejaVu Sans", sans-serif; color: #1d2330; background: #fff; }
  header { height: ${HEADER_HEIGHT}px; padding: 14px 18px 0; border-bottom: 1px solid #d5d9e0; background: #f6f7f9; }
  h1 { margin: 0 0 6px; font-size: 18px; }
  .meta { color: #4a5262; margin-bottom: 8px; }
  .meta b { color: #1d2330; }
  .key { margin-right: 18px; white-space: nowrap; }
  .grid { display: grid; grid-template-columns: 560px 74px 1fr; overflow: hidden; }
  .row { display: contents; }
  .row > div { height: ${ROW_HEIGHT}px; border-bottom: 1px solid #eef0f3; }
  .row:nth-child(even) > div { background: #fafbfc; }
  .row.failed > div { background: #fdecec; }
  .label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; padding-top: 3px; padding-right: 6px; }
  .service { color: #5b6475; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
  .hint { color: #8a93a3; font-size: 11px; margin-left: 6px; }
  .reason { color: #c62828; }
  .err { color: #c62828; font-weight: bold; margin-right: 4px; }
  .dur { text-align: right; padding: 3px 8px 0 0; color: #3a4252; font-variant-numeric: tabular-nums; }
  .lane { position: relative; margin-right: 70px; }
  .bar { position: absolute; top: 5px; height: 12px; border-radius: 2px; }
  .row.failed .bar { outline: 2px solid #c62828; }
  .at { position: absolute; top: 3px; color: #6b7384; font-size: 11px; white-space: nowrap; }
  .axis { position: relative; height: 22px; margin-right: 70px; border-bottom: 1px solid #c9ced6; }
  .tick { position: absolute; top: 0; bottom: -100000px; border-left: 1px solid #e3e6eb; pointer-events: none; }
  .tick span { position: absolute; top: 4px; left: 3px; color: #6b7384; font-size: 11px; white-space: nowrap; }
  .lanes { position: relative; overflow: hidden; }
  .colhead { height: 22px; padding: 5px 8px 0; color: #6b7384; font-size: 11px; border-bottom: 1px solid #c9ced6; }
  footer { height: ${FOOTER_HEIGHT}px; padding: 10px 18px; color: #6b7384; border-top: 1px solid #d5d9e0; }
`;

/** Axis ticks at a round step, about eight across. */
function ticks(totalMicros) {
  const roughMs = totalMicros / 1000 / 8;
  const magnitude = 10 ** Math.floor(Math.log10(Math.max(roughMs, 0.001)));
  const stepMs = [1, 2, 5, 10].map((f) => f * magnitude).find((step) => step >= roughMs);
  const result = [];
  for (let at = 0; at * 1000 <= totalMicros; at += stepMs) result.push(at);
  return result;
}

function renderHtml(trace, title) {
  const rows = treeOrder(trace);
  const serviceOf = (span) => trace.processes?.[span.processID]?.serviceName ?? span.processID;
  const services = [...new Set(rows.map(({ span }) => serviceOf(span)))];
  const colour = new Map(services.map((service, i) => [service, PALETTE[i % PALETTE.length]]));
  const start = Math.min(...trace.spans.map((span) => span.startTime));
  const end = Math.max(...trace.spans.map((span) => span.startTime + span.duration));
  const total = Math.max(end - start, 1);
  const pct = (micros) => `${((micros / total) * 100).toFixed(3)}%`;
  const root = rows[0]?.span;
  const heading = title ?? (root ? `${serviceOf(root)}: ${root.operationName}` : 'trace');
  const errors = rows.filter(({ span }) => isError(span)).length;

  const spanRows = rows.map(({ span, depth }) => {
    const service = serviceOf(span);
    const failed = isError(span);
    const offset = span.startTime - start;
    const label = `${service}: ${span.operationName}`;
    const tooltip = `${label}\n${ms(span.duration)} at +${ms(offset)}${failed ? `\nerror: ${tagOf(span, 'otel.status_description') ?? ''}` : ''}`;
    const barLeftOfMiddle = offset + span.duration / 2 < total * 0.6;
    const hints = HINT_TAGS.filter((key) => tagOf(span, key) !== undefined).map((key) => `${key}=${tagOf(span, key)}`).join(' ');
    const reason = String(tagOf(span, 'otel.status_description') ?? '');
    const note = failed && reason && barLeftOfMiddle ? ` · <span class="reason">${escapeHtml(reason.length > ERROR_TEXT_MAX ? `${reason.slice(0, ERROR_TEXT_MAX)}…` : reason)}</span>` : '';
    return `<div class="row${failed ? ' failed' : ''}" title="${escapeHtml(tooltip)}">
  <div class="label" style="padding-left:${8 + depth * 14}px"><span class="swatch" style="background:${colour.get(service)}"></span>${failed ? '<span class="err">✖</span>' : ''}<span class="service">${escapeHtml(service)}:</span> ${escapeHtml(span.operationName)}${hints ? ` <span class="hint">${escapeHtml(hints)}</span>` : ''}</div>
  <div class="dur">${ms(span.duration)}</div>
  <div class="lane"><div class="bar" style="left:${pct(offset)};width:max(2px,${pct(span.duration)});background:${colour.get(service)}"></div><div class="at ${barLeftOfMiddle ? 'after' : 'before'}" style="${barLeftOfMiddle ? `left:calc(${pct(offset + span.duration)} + 4px)` : `right:calc(100% - ${pct(offset)} + 4px)`}">${ms(span.duration)}${note}</div></div>
</div>`;
  }).join('\n');

  const axis = ticks(total).map((atMs) => `<div class="tick" style="left:${pct(atMs * 1000)}"><span>${atMs >= 1000 ? `${atMs / 1000} s` : `${atMs} ms`}</span></div>`).join('');
  const legend = services.map((service) => {
    const count = rows.filter(({ span }) => serviceOf(span) === service).length;
    return `<span class="key"><span class="swatch" style="background:${colour.get(service)}"></span>${escapeHtml(service)} (${count})</span>`;
  }).join('');

  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeHtml(heading)} — trace ${escapeHtml(trace.traceID)}</title>
<style>
${CSS}</style></head>
<body>
<header>
  <h1>${escapeHtml(heading)}</h1>
  <div class="meta">trace <b>${escapeHtml(trace.traceID)}</b> · <b>${ms(total)}</b> · ${rows.length} spans from ${services.length} services${errors ? ` · <b style="color:#c62828">${errors} in error</b>` : ''}</div>
  <div>${legend}</div>
</header>
<div class="grid">
  <div class="colhead">service: operation</div><div class="colhead" style="text-align:right">duration</div><div class="axis">${axis}</div>
${spanRows}
</div>
<footer>Drawn by scripts/trace-picture.mjs from Jaeger's query API (GET /api/traces/${escapeHtml(trace.traceID)}, the JSON Jaeger's UI reads): Jaeger's own UI is not embedded in the Jaeger built here.</footer>
</body></html>
`;
}

/** Runs headless Chromium on the page; its Debian wrapper is noisy on stderr, so that is shown only on failure. */
function screenshot(htmlFile, pngFile, height, profileDir) {
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--force-device-scale-factor=1', `--user-data-dir=${profileDir}`,
    `--window-size=${PAGE_WIDTH},${height}`, `--screenshot=${path.resolve(pngFile)}`, pathToFileURL(path.resolve(htmlFile)).href,
  ];
  return new Promise((resolve, reject) => {
    let output = '';
    const child = spawn('chromium', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(error.code === 'ENOENT' ? 'chromium not found: apt-get install chromium' : `chromium: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else if (code !== null || signal) reject(new Error(`chromium exited with ${code ?? signal}:\n${output.trim().split('\n').slice(-5).join('\n')}`));
    });
  });
}

async function main() {
  const options = parseCommandLine();
  const trace = await loadTrace(options);
  if (trace.spans.length === 0) fail(`trace ${trace.traceID} has no spans`);
  const html = renderHtml(trace, options.title);
  const scratch = mkdtempSync(path.join(tmpdir(), 'kts-trace-picture-'));
  try {
    const htmlFile = options.html ?? path.join(scratch, 'trace.html');
    writeFileSync(htmlFile, html);
    const height = HEADER_HEIGHT + ROW_HEIGHT * (trace.spans.length + 1) + FOOTER_HEIGHT + 4;
    await screenshot(htmlFile, options.out, height, path.join(scratch, 'profile'));
  } catch (error) {
    process.exitCode = 1;
    console.error(`trace-picture: ${error.message}`);
    return;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  console.log(`trace-picture: ${options.out}: ${trace.spans.length} spans of trace ${trace.traceID}`);
}

await main();
