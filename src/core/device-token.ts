import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Subject } from './subjects';

/*
 * Device tokens (OWASP "Slow Down Online Guessing Attacks with Device Cookies", issue 12): after a
 * successful login lockgate issues a token bound to (instance, org, user) and a random device id;
 * a check that presents a valid one counts on that device's own scope.
 *
 * Form: `<key id>.<payload>.<mac>`, payload = base64url(JSON [instance, org, user, deviceId,
 * issuedAt ms]), mac = base64url(HMAC-SHA256(key, "lockgate-device-v1." + key id + "." + payload)).
 * Keys are a list with ids: the first signs, every one verifies (rotation: add a new key first,
 * drop the old one after maxAgeMs). Verification is constant-time on the MAC; a token that is
 * malformed, signed by an unknown key, expired, from the future, or bound to another user is
 * simply absent (undefined) — never an error, so that a client learns nothing from it.
 */

export interface DeviceKey {
  readonly id: string;
  readonly secret: Buffer;
}

export interface DeviceTokenConfig {
  readonly keys: readonly DeviceKey[];
  readonly maxAgeMs: number;
}

/** A device id: 16 random bytes, base64url (22 characters). */
export const DEVICE_ID = /^[A-Za-z0-9_-]{22}$/;
/** Longest token accepted (ids are at most 256 characters each). */
const MAX_TOKEN_LENGTH = 4096;
/** Clock skew tolerated between processes for a token's issue time. */
const SKEW_MS = 60_000;

function mac(key: DeviceKey, payload: string): Buffer {
  return createHmac('sha256', key.secret).update(`lockgate-device-v1.${key.id}.${payload}`).digest();
}

export function newDeviceId(): string {
  return randomBytes(16).toString('base64url');
}

/** Issues a token for `subject`'s device `deviceId` (a new one when absent), signed by the first key. */
export function issueDeviceToken(
  config: DeviceTokenConfig,
  subject: Subject,
  deviceId: string = newDeviceId(),
  now: number = Date.now(),
): { token: string; deviceId: string } {
  const key = config.keys[0];
  if (key === undefined) throw new Error('device tokens need at least one key');
  const payload = Buffer.from(
    JSON.stringify([subject.instance, subject.org, subject.user, deviceId, now]),
  ).toString('base64url');
  return { token: `${key.id}.${payload}.${mac(key, payload).toString('base64url')}`, deviceId };
}

/** The device id of a valid token of `subject`, else undefined (see the file comment). */
export function verifyDeviceToken(
  config: DeviceTokenConfig,
  subject: Subject,
  token: unknown,
  now: number = Date.now(),
): string | undefined {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [kid, payload, given] = parts as [string, string, string];
  const key = config.keys.find((k) => k.id === kid);
  if (key === undefined) return undefined;
  const expected = mac(key, payload);
  const actual = Buffer.from(given, 'base64url');
  if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) return undefined;
  let fields: unknown;
  try {
    fields = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(fields) || fields.length !== 5) return undefined;
  const [instance, org, user, deviceId, issuedAt] = fields as unknown[];
  if (instance !== subject.instance || org !== subject.org || user !== subject.user) return undefined;
  if (typeof deviceId !== 'string' || !DEVICE_ID.test(deviceId)) return undefined;
  if (typeof issuedAt !== 'number' || issuedAt > now + SKEW_MS || now - issuedAt > config.maxAgeMs) {
    return undefined;
  }
  return deviceId;
}
