import type { LockoutEvent } from './engine';

/**
 * Per-minute counts of failed checks, locks and unlocks per org, kept in this process only and
 * fed by the engine's onEvent hook. It is what the console's activity chart draws: a spray
 * attack shows as a wall of failures. It is not a metrics system (the sidecar's /metrics is):
 * nothing is persisted, every process counts its own events, and only the last
 * `windowMinutes` are kept.
 */

export interface ActivityOptions {
  /** Minutes kept (default 180, at most 1440). */
  readonly windowMinutes?: number;
  /** Orgs kept (default 1000); past it, the org counted least recently is dropped. */
  readonly maxOrgs?: number;
  /** The clock (ms since the epoch); tests pass their own. */
  readonly now?: () => number;
}

/** One minute of an org's activity. */
export interface ActivityMinute {
  /** Start of the minute, ms since the epoch. */
  readonly start: number;
  /** Failed credential checks (settled failures). */
  readonly failures: number;
  /** Users locked (by failures or by an admin). */
  readonly locks: number;
  /** Users unlocked by an admin. */
  readonly unlocks: number;
}

export interface Activity {
  /** Counts an engine event (pass it the engine's onEvent events). Never throws. */
  record(event: LockoutEvent): void;
  /** The last `minutes` minutes of `org`, oldest first, one entry per minute (zeros included). */
  read(org: string, minutes?: number): ActivityMinute[];
  /** The number of minutes kept. */
  readonly windowMinutes: number;
}

const MINUTE_MS = 60_000;
const COUNTERS = 3; // failures, locks, unlocks

/** A ring of `window` minutes: the minute number of each slot and its counters. */
interface Ring {
  readonly minutes: Float64Array;
  readonly counts: Uint32Array;
}

export function createActivity(options: ActivityOptions = {}): Activity {
  const windowMinutes = options.windowMinutes ?? 180;
  const maxOrgs = options.maxOrgs ?? 1000;
  if (!Number.isInteger(windowMinutes) || windowMinutes < 1 || windowMinutes > 1440) {
    throw new RangeError('activity windowMinutes must be an integer from 1 to 1440');
  }
  if (!Number.isInteger(maxOrgs) || maxOrgs < 1) throw new RangeError('activity maxOrgs must be at least 1');
  const now = options.now ?? Date.now;
  // Insertion order is recency: an org counted again moves to the end; the first is the oldest.
  const rings = new Map<string, Ring>();

  const ringOf = (org: string): Ring => {
    let ring = rings.get(org);
    if (ring) {
      rings.delete(org);
    } else {
      ring = {
        minutes: new Float64Array(windowMinutes).fill(-1),
        counts: new Uint32Array(windowMinutes * COUNTERS),
      };
      if (rings.size >= maxOrgs) {
        const oldest = rings.keys().next().value;
        if (oldest !== undefined) rings.delete(oldest);
      }
    }
    rings.set(org, ring);
    return ring;
  };

  const count = (org: string, counter: number): void => {
    const minute = Math.floor(now() / MINUTE_MS);
    const ring = ringOf(org);
    const slot = minute % windowMinutes;
    if (ring.minutes[slot] !== minute) {
      ring.minutes[slot] = minute;
      ring.counts.fill(0, slot * COUNTERS, slot * COUNTERS + COUNTERS);
    }
    const at = slot * COUNTERS + counter;
    ring.counts[at] = (ring.counts[at] ?? 0) + 1;
  };

  return {
    windowMinutes,
    record(event) {
      switch (event.type) {
        case 'check':
          if (event.outcome === 'failure') count(event.org, 0);
          return;
        case 'lock':
          count(event.org, 1);
          return;
        case 'unlock':
          count(event.org, 2);
          return;
        default:
          return;
      }
    },
    read(org, minutes = windowMinutes) {
      const n = Math.min(Math.max(1, Math.floor(minutes)), windowMinutes);
      const last = Math.floor(now() / MINUTE_MS);
      const ring = rings.get(org);
      const out: ActivityMinute[] = [];
      for (let minute = last - n + 1; minute <= last; minute += 1) {
        const slot = minute % windowMinutes;
        const kept = ring !== undefined && ring.minutes[slot] === minute;
        const at = slot * COUNTERS;
        out.push({
          start: minute * MINUTE_MS,
          failures: kept ? (ring.counts[at] ?? 0) : 0,
          locks: kept ? (ring.counts[at + 1] ?? 0) : 0,
          unlocks: kept ? (ring.counts[at + 2] ?? 0) : 0,
        });
      }
      return out;
    },
  };
}
