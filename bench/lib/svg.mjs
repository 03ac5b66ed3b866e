// Hand-written SVG charts for the bench results: latency CDFs on a log axis and line charts with
// min–max bars. No dependencies; the output is deterministic for the same data.

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f'];
const PANEL = { width: 560, height: 410, left: 62, right: 20, top: 34, bottom: 110 };
const PLOT_BOTTOM = PANEL.height - PANEL.bottom;

const escape = (text) => String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fixed = (x) => Math.round(x * 10) / 10;
const text = (x, y, content, attributes = '') => `<text x="${fixed(x)}" y="${fixed(y)}" ${attributes}>${escape(content)}</text>`;

/** The largest 1, 2, 5 × 10^k at or below x (`up`: the smallest at or above). */
function niceLog(x, up) {
  const steps = [];
  for (let exponent = Math.floor(Math.log10(x)) - 1; exponent <= Math.ceil(Math.log10(x)) + 1; exponent++) for (const m of [1, 2, 5]) steps.push(m * 10 ** exponent);
  return up ? steps.find((s) => s >= x) : steps.reverse().find((s) => s <= x);
}

/** 1500 → "1.5k", 20000 → "20k", 0.25 → "0.25". */
const compact = (value) => (value >= 1000 ? `${value / 1000}k` : String(value));

/** Tick values 1, 2, 5 × 10^k covering [min, max]. */
function logTicks(min, max) {
  const ticks = [];
  for (let exponent = Math.floor(Math.log10(min)); exponent <= Math.ceil(Math.log10(max)); exponent++) {
    for (const m of [1, 2, 5]) {
      const value = m * 10 ** exponent;
      if (value >= min && value <= max) ticks.push(value);
    }
  }
  return ticks;
}

/** About `count` round tick values from 0 to max. */
function linearTicks(max, count = 5) {
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return Array.from({ length: Math.floor(max / step) + 1 }, (_, i) => i * step);
}

/** Axes, grid, labels and a legend; `xAt`/`yAt` map data to pixels inside the panel. */
function frame({ title, xLabel, yLabel, xTicks, yTicks, xAt, yAt, legend }) {
  const { width, left, right, top } = PANEL;
  const parts = [text(width / 2, 20, title, 'text-anchor="middle" font-size="14" font-weight="bold"')];
  for (const tick of xTicks) {
    parts.push(`<line x1="${fixed(xAt(tick))}" y1="${top}" x2="${fixed(xAt(tick))}" y2="${PLOT_BOTTOM}" stroke="#e5e5e5"/>`);
    parts.push(text(xAt(tick), PLOT_BOTTOM + 16, compact(tick), 'text-anchor="middle" font-size="11"'));
  }
  for (const tick of yTicks) {
    parts.push(`<line x1="${left}" y1="${fixed(yAt(tick))}" x2="${width - right}" y2="${fixed(yAt(tick))}" stroke="#e5e5e5"/>`);
    parts.push(text(left - 6, yAt(tick) + 4, compact(tick), 'text-anchor="end" font-size="11"'));
  }
  parts.push(`<rect x="${left}" y="${top}" width="${width - left - right}" height="${PLOT_BOTTOM - top}" fill="none" stroke="#333"/>`);
  parts.push(text((left + width - right) / 2, PLOT_BOTTOM + 34, xLabel, 'text-anchor="middle" font-size="12"'));
  parts.push(text(14, (top + PLOT_BOTTOM) / 2, yLabel, `text-anchor="middle" font-size="12" transform="rotate(-90 14 ${fixed((top + PLOT_BOTTOM) / 2)})"`));
  // The legend sits under the plot, two columns, so it never hides a line.
  legend.forEach(({ label, color }, i) => {
    const x = left + (i % 2) * ((width - left - right) / 2);
    const y = PLOT_BOTTOM + 56 + Math.floor(i / 2) * 16;
    parts.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 18}" y2="${y - 4}" stroke="${color}" stroke-width="2.5"/>`);
    parts.push(text(x + 24, y, label, 'font-size="11"'));
  });
  return parts;
}

/** One CDF panel: each series' samples (ms) as a step line, x on a log scale. */
export function cdfPanel({ title, xLabel = 'start latency (ms, log scale)', series }) {
  const { width, left, right, top } = PANEL;
  const all = series.flatMap((s) => s.samples);
  const lo = niceLog(Math.min(...all), false);
  const hi = niceLog(Math.max(...all), true);
  const xAt = (x) => left + ((Math.log10(x) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (width - left - right);
  const yAt = (y) => PLOT_BOTTOM - y * (PLOT_BOTTOM - top);
  const colored = series.map((s, i) => ({ ...s, color: PALETTE[i % PALETTE.length] }));
  const parts = frame({ title, xLabel, yLabel: 'fraction of starts', xTicks: logTicks(lo, hi), yTicks: [0, 0.25, 0.5, 0.75, 1], xAt, yAt, legend: colored });
  for (const { samples, color } of colored) {
    const sorted = [...samples].sort((a, b) => a - b);
    let d = `M${fixed(xAt(sorted[0]))},${fixed(yAt(0))}`;
    sorted.forEach((x, i) => (d += ` L${fixed(xAt(x))},${fixed(yAt(i / sorted.length))} L${fixed(xAt(x))},${fixed(yAt((i + 1) / sorted.length))}`));
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`);
  }
  return parts;
}

/**
 * One line-chart panel: series of points {x, y, lo?, hi?} (lo–hi drawn as a bar), and markers: a
 * dashed vertical line at x with a label.
 */
export function linePanel({ title, xLabel, yLabel, series, markers = [] }) {
  const { width, left, right, top } = PANEL;
  const points = series.flatMap((s) => s.points);
  const xMax = Math.max(...points.map((p) => p.x));
  const yMax = Math.max(...points.map((p) => p.hi ?? p.y)) * 1.08;
  const xAt = (x) => left + (x / xMax) * (width - left - right);
  const yAt = (y) => PLOT_BOTTOM - (y / yMax) * (PLOT_BOTTOM - top);
  const colored = series.map((s, i) => ({ ...s, color: PALETTE[i % PALETTE.length] }));
  const parts = frame({ title, xLabel, yLabel, xTicks: linearTicks(xMax), yTicks: linearTicks(yMax), xAt, yAt, legend: colored });
  for (const { points: line, color } of colored) {
    parts.push(`<polyline points="${line.map((p) => `${fixed(xAt(p.x))},${fixed(yAt(p.y))}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
    for (const p of line) {
      parts.push(`<circle cx="${fixed(xAt(p.x))}" cy="${fixed(yAt(p.y))}" r="3" fill="${color}"/>`);
      if (p.lo !== undefined) parts.push(`<line x1="${fixed(xAt(p.x))}" y1="${fixed(yAt(p.lo))}" x2="${fixed(xAt(p.x))}" y2="${fixed(yAt(p.hi))}" stroke="${color}"/>`);
    }
  }
  for (const { x, label } of markers) {
    parts.push(`<line x1="${fixed(xAt(x))}" y1="${top}" x2="${fixed(xAt(x))}" y2="${PLOT_BOTTOM}" stroke="#555" stroke-dasharray="4 3"/>`);
    parts.push(text(xAt(x) - 4, PLOT_BOTTOM - 8, label, 'text-anchor="end" font-size="11" fill="#333"'));
  }
  return parts;
}

/** Panels side by side in one SVG document. */
export function svgDocument(panels) {
  const body = panels.map((parts, i) => `<g transform="translate(${i * PANEL.width},0)">\n${parts.join('\n')}\n</g>`).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${panels.length * PANEL.width}" height="${PANEL.height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${body}\n</svg>\n`;
}
