/**
 * Judging the upstream's answer to a login: success (the counter is reset), failure (counted) or
 * release (not counted), by the route's body rules, its preset, then its status lists.
 */
import type { JudgeRuleConfig, ProxyRouteConfig, StatusRange } from './config';

export type Verdict = 'success' | 'failure' | 'release';

const OAUTH2_RULES: readonly JudgeRuleConfig[] = [
  { status: [{ min: 400, max: 400 }], json: 'error', equals: ['invalid_grant'], verdict: 'failure' },
  { status: [{ min: 400, max: 400 }], verdict: 'release' },
];

function within(status: number, ranges: readonly StatusRange[]): boolean {
  return ranges.some((r) => status >= r.min && status <= r.max);
}

function rulesOf(route: ProxyRouteConfig): readonly JudgeRuleConfig[] {
  return route.judge.preset === 'oauth2-token' ? [...route.judge.rules, ...OAUTH2_RULES] : route.judge.rules;
}

/** Whether judging this status needs the answer's body. */
export function bodyRulesFor(route: ProxyRouteConfig, status: number): boolean {
  return rulesOf(route).some(
    (r) => (r.json !== undefined || r.text !== undefined) && within(status, r.status),
  );
}

function ruleMatches(rule: JudgeRuleConfig, status: number, body: Buffer | undefined): boolean {
  if (!within(status, rule.status)) return false;
  if (rule.json === undefined && rule.text === undefined) return true;
  if (body === undefined) return false;
  const text = body.toString('utf8');
  if (rule.text !== undefined && !text.includes(rule.text)) return false;
  if (rule.json !== undefined) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return false;
    }
    let node = doc;
    for (const part of rule.json.split('.')) {
      if (typeof node !== 'object' || node === null || !Object.prototype.hasOwnProperty.call(node, part))
        return false;
      node = (node as Record<string, unknown>)[part];
    }
    if (rule.equals !== undefined) return typeof node === 'string' && rule.equals.includes(node);
    return node !== undefined && node !== null && node !== false && node !== '';
  }
  return true;
}

/** The verdict on an upstream answer (`body`: the whole answer when it was read, else undefined). */
export function judge(route: ProxyRouteConfig, status: number, body: Buffer | undefined): Verdict {
  for (const rule of rulesOf(route)) if (ruleMatches(rule, status, body)) return rule.verdict;
  if (within(status, route.judge.success)) return 'success';
  if (within(status, route.judge.failure)) return 'failure';
  return 'release';
}
