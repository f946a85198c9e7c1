import { randomBytes } from 'node:crypto';

/*
 * The event record (issue 14): what the engine tells `onEvent`, turned into a durable record with
 * an id, a time, an org, a user, a type and an actor, and kept by an EventLog (a Redis Stream per
 * org, or a bounded in-process ring). The record is generic: every field of an engine event other
 * than its type, org, user and actor goes into `data` as it is, so event types and optional
 * fields added to LockoutEvent later flow through without changes here beyond EVENT_TYPES (an
 * engine event type not listed there is recorded under its own name). Credentials never do: a
 * field whose name is a credential's (CREDENTIAL_FIELDS) is dropped at any depth.
 */

/**
 * Who caused an event: a configured API token (its name), a JWT (its subject), an app that
 * embeds the routers with its own `authorize` hook (the principal it answered), or lockgate
 * itself (`system`: a lock by failed checks, an automatic unlock).
 */
export type Actor =
  | { readonly type: 'token'; readonly name: string }
  | { readonly type: 'jwt'; readonly subject: string }
  | { readonly type: 'app'; readonly name: string }
  | { readonly type: 'system' };

/** The actor of what lockgate does by itself. */
export const SYSTEM_ACTOR: Actor = Object.freeze({ type: 'system' });

/** Optional context of an admin operation of the engine: who asked for it. */
export interface OperationContext {
  readonly actor?: Actor;
}

/**
 * Engine event type → recorded type (the `type` of the record and of a webhook message).
 * `null`: not recorded (every check is counted in /metrics, not recorded). A type not in this
 * table is recorded under its own name, with its fields.
 */
export const EVENT_TYPES: Readonly<Record<string, string | null>> = Object.freeze({
  check: null,
  lock: 'user.locked',
  unlock: 'user.unlocked',
  password_changed: 'user.password_changed',
  settings: 'settings.changed',
  throttle: 'client.throttled',
  forgiven: 'user.forgiven',
  defences: 'defences.changed',
});

/** The recorded types lockgate knows of (webhook endpoints may name these, or `*`). */
export const RECORDED_EVENT_TYPES: readonly string[] = Object.values(EVENT_TYPES).filter(
  (t): t is string => t !== null,
);

/**
 * Field names that are never recorded, at any depth (compared case-insensitively, whole names
 * only: `maxPasswordAttempts` is kept, `password` is not).
 */
export const CREDENTIAL_FIELDS: ReadonlySet<string> = new Set(
  [
    'password',
    'newPassword',
    'code',
    'otp',
    'secret',
    'token',
    'encodedHash',
    'hash',
    'codeHash',
    'credential',
    'credentials',
    'authorization',
    'pepper',
    'key',
    'attemptId',
    'nonce',
  ].map((f) => f.toLowerCase()),
);

/** One recorded event. Never holds a credential. */
export interface EventRecord {
  /** Unique id (`evt_` + 26 base32 characters): the Standard Webhooks `webhook-id`. */
  readonly id: string;
  /** When it was recorded (ms since the epoch, the recording process's clock). */
  readonly time: number;
  /** The org (the instance id for instance settings). */
  readonly org: string;
  /** The user, for user events. */
  readonly user?: string;
  /** The recorded type (EVENT_TYPES), e.g. `user.locked`. */
  readonly type: string;
  readonly actor: Actor;
  /** Every other field of the engine's event (factor, reason, failedAttempts, before/after…). */
  readonly data: Readonly<Record<string, unknown>>;
}

/** A page of recorded events, newest first; `nextCursor` continues after the last one. */
export interface EventPage {
  readonly events: readonly EventRecord[];
  readonly nextCursor?: string;
}

export interface EventQuery {
  /** 1 to 1000 (default 100). */
  readonly limit?: number;
  /** From a page's nextCursor. */
  readonly cursor?: string;
  readonly user?: string;
  readonly type?: string;
}

/**
 * Where events are recorded. `append` never rejects (an event that could not be recorded is
 * reported to the log's own error hook and counted); `list` rejects with StoreUnavailableError
 * when its store cannot be reached, InvalidArgumentError for a bad cursor.
 */
export interface EventLog {
  append(record: EventRecord): Promise<void>;
  /** Events of `org`, newest first, filtered by user and type. */
  list(org: string, query: EventQuery): Promise<EventPage>;
  /** Tells `listener` of every event this process appends (the in-process webhook queue). */
  subscribe?(listener: (record: EventRecord) => void): () => void;
  close(): Promise<void>;
}

/** An event no attempt could deliver to a webhook endpoint. */
export interface DeadLetter {
  readonly endpoint: string;
  readonly event: EventRecord;
  readonly attempts: number;
  /** The last answer's HTTP status, when there was one. */
  readonly lastStatus?: number;
  /** Why the last attempt failed, when there was no answer (`timeout`, `network`). */
  readonly lastError?: string;
  /** When it was given up (ms). */
  readonly time: number;
}

/** An event as the API answers it and webhooks carry it (`orgId`/`userId`, RFC 3339 time). */
export interface RenderedEvent {
  readonly id: string;
  readonly time: string;
  readonly orgId: string;
  readonly userId?: string;
  readonly type: string;
  readonly actor: Actor;
  readonly data: Readonly<Record<string, unknown>>;
}

export function renderEvent(r: EventRecord): RenderedEvent {
  return {
    id: r.id,
    time: new Date(r.time).toISOString(),
    orgId: r.org,
    ...(r.user !== undefined ? { userId: r.user } : {}),
    type: r.type,
    actor: r.actor,
    data: renderTimes(r.data),
  };
}

/** The data fields that are instants (ms since the epoch in the record): RFC 3339 in answers, as `time`. */
const TIME_FIELDS: ReadonlySet<string> = new Set(['lockedAt', 'lockedUntil', 'until']);

function renderTimes(data: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  if (!Object.keys(data).some((k) => TIME_FIELDS.has(k) && typeof data[k] === 'number')) return data;
  const out: Record<string, unknown> = { ...data };
  for (const k of TIME_FIELDS) {
    const v = out[k];
    if (typeof v === 'number' && Number.isFinite(v)) out[k] = new Date(v).toISOString();
  }
  return out;
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** A new event id: `evt_` + 26 base32 characters (130 random bits, 128 used). */
export function newEventId(): string {
  const bytes = randomBytes(17);
  let out = 'evt_';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < 30) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

/** A copy of `value` without credential fields (CREDENTIAL_FIELDS), at any depth; functions dropped. */
function clean(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return typeof value === 'function' ? undefined : value;
  if (depth > 8) return undefined;
  if (Array.isArray(value)) return value.map((v) => clean(v, depth + 1));
  if (value instanceof Error) return { name: value.name };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (CREDENTIAL_FIELDS.has(k.toLowerCase())) continue;
    const c = clean(v, depth + 1);
    if (c !== undefined) out[k] = c;
  }
  return out;
}

/**
 * The record of an engine event, or undefined when its type is not recorded (EVENT_TYPES). The
 * org is the event's `org`, else its owner's (`owner: { type: 'org', org }`), else `instanceId`.
 */
export function toEventRecord<E extends { readonly type: string }>(
  event: E,
  instanceId: string,
  now = Date.now(),
): EventRecord | undefined {
  const mapped = Object.prototype.hasOwnProperty.call(EVENT_TYPES, event.type)
    ? EVENT_TYPES[event.type]
    : event.type;
  if (mapped === null || mapped === undefined) return undefined;
  const {
    type: _type,
    org,
    user,
    actor,
    // who made the check (CheckOptions.caller): for audit lines, not part of the record
    caller: _caller,
    ...rest
  } = event as { readonly type: string } & Readonly<Record<string, unknown>>;
  const owner = rest.owner as { type?: string; org?: unknown } | undefined;
  const recordOrg =
    typeof org === 'string'
      ? org
      : owner?.type === 'org' && typeof owner.org === 'string'
        ? owner.org
        : instanceId;
  return {
    id: newEventId(),
    time: now,
    org: recordOrg,
    ...(typeof user === 'string' ? { user } : {}),
    type: mapped,
    actor: isActor(actor) ? actor : SYSTEM_ACTOR,
    data: clean(rest) as Record<string, unknown>,
  };
}

export function isActor(value: unknown): value is Actor {
  if (typeof value !== 'object' || value === null) return false;
  const a = value as Record<string, unknown>;
  switch (a.type) {
    case 'token':
    case 'app':
      return typeof a.name === 'string';
    case 'jwt':
      return typeof a.subject === 'string';
    case 'system':
      return true;
    default:
      return false;
  }
}
