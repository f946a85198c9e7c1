import type { Owner, SettingsRecord } from './store';

interface Entry<T> {
  readonly promise: Promise<T | null>;
  readonly expiresAt: number;
}

/**
 * In-process cache of stored settings records, keyed by owner. Entries live `ttlMs` at most and
 * are dropped at once when the store reports a change (pub/sub on Redis), so a change is seen by
 * every process within the TTL even if a notification is lost. A read that was in flight when an
 * invalidation arrived is not cached (generation check), so it cannot put back a stale value.
 */
export class SettingsCache<T = SettingsRecord> {
  private readonly entries = new Map<string, Entry<T>>();
  private generation = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  get(owner: Owner, load: () => Promise<T | null>): Promise<T | null> {
    const key = keyOf(owner);
    const hit = this.entries.get(key);
    const now = this.now();
    if (hit && hit.expiresAt > now) return hit.promise;
    const generation = this.generation;
    const promise = load();
    if (this.ttlMs > 0) {
      this.entries.delete(key);
      this.entries.set(key, { promise, expiresAt: now + this.ttlMs });
      if (this.entries.size > this.maxEntries) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
      promise.then(
        () => {
          if (this.generation !== generation && this.entries.get(key)?.promise === promise)
            this.entries.delete(key);
        },
        () => {
          if (this.entries.get(key)?.promise === promise) this.entries.delete(key);
        },
      );
    }
    return promise;
  }

  invalidate(owner: Owner): void {
    this.generation++;
    this.entries.delete(keyOf(owner));
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }
}

/**
 * The instance's key: an org's key is its id, and an id never holds a control character, so no
 * org's key equals this one. (No per-lookup string is built for an org.)
 */
const INSTANCE_KEY = '\u0000instance';

function keyOf(owner: Owner): string {
  return owner.type === 'instance' ? INSTANCE_KEY : owner.org;
}
