// The PromQL of the Grafana dashboards in dashboards/: every panel target and every query variable.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon.js';

export const DASHBOARDS = path.join(REPO, 'dashboards');

export interface DashboardQuery {
  dashboard: string;
  /** `panel "<title>"` or `variable $<name>`. */
  where: string;
  /** As Grafana holds it: with `$instance`, `$__rate_interval`…, and `label_values(...)` for variables. */
  expr: string;
}

interface Panel {
  title: string;
  targets?: Array<{ expr: string }>;
  panels?: Panel[];
}

/** Every `expr` of every panel target (rows' nested panels too) and every query variable of every dashboard. */
export function dashboardQueries(): DashboardQuery[] {
  const queries: DashboardQuery[] = [];
  for (const file of readdirSync(DASHBOARDS).filter((name) => name.endsWith('.json'))) {
    const dashboard = JSON.parse(readFileSync(path.join(DASHBOARDS, file), 'utf8')) as {
      panels: Panel[];
      templating: { list: Array<{ name: string; type: string; query?: { query: string } | string }> };
    };
    for (const panel of dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])])) {
      for (const target of panel.targets ?? []) queries.push({ dashboard: file, where: `panel "${panel.title}"`, expr: target.expr });
    }
    for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
      const query = typeof variable.query === 'string' ? variable.query : variable.query?.query ?? '';
      queries.push({ dashboard: file, where: `variable $${variable.name}`, expr: query });
    }
  }
  return queries;
}

/**
 * The PromQL Grafana would send with every variable at "All" (`.*`), the rate interval at `rateInterval`
 * and the dashboard range at `range`; a `label_values(metric, label)` variable becomes `metric`, whose
 * series must carry `label`.
 */
export function asPromQL(expr: string, options: { rateInterval: string; range: string }): { promql: string; label?: string } {
  const labelValues = /^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$/.exec(expr.trim());
  if (labelValues) return { promql: labelValues[1]!, label: labelValues[2]! };
  const promql = expr
    .replaceAll('$__rate_interval', options.rateInterval)
    .replaceAll('$__range', options.range)
    .replace(/\$[a-zA-Z_]+/g, '.*');
  return { promql };
}
