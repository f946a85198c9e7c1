/**
 * Device tokens (issue 12): bound to instance, org and user; the first key signs and every key
 * verifies (rotation); a token that is tampered with, too old, from the future, another user's,
 * signed by an unknown key or malformed is absent (undefined), never an error.
 */
import { randomBytes } from 'node:crypto';
import { issueDeviceToken, verifyDeviceToken, type DeviceTokenConfig } from '../../src/core/device-token';

const k1 = { id: 'k1', secret: randomBytes(32) };
const k2 = { id: 'k2', secret: randomBytes(32) };
const DAY = 86_400_000;
const old: DeviceTokenConfig = { keys: [k1], maxAgeMs: 30 * DAY };
const rotated: DeviceTokenConfig = { keys: [k2, k1], maxAgeMs: 30 * DAY };
const after: DeviceTokenConfig = { keys: [k2], maxAgeMs: 30 * DAY };
const alice = { instance: 'i', org: 'o', user: 'alice' };
const NOW = 1_800_000_000_000;

describe('device tokens', () => {
  it('verify for their own user and answer the device id', () => {
    const { token, deviceId } = issueDeviceToken(old, alice, undefined, NOW);
    expect(deviceId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(verifyDeviceToken(old, alice, token, NOW)).toBe(deviceId);
    expect(verifyDeviceToken(old, { ...alice, user: 'bob' }, token, NOW)).toBeUndefined();
    expect(verifyDeviceToken(old, { ...alice, org: 'p' }, token, NOW)).toBeUndefined();
    expect(verifyDeviceToken(old, { ...alice, instance: 'j' }, token, NOW)).toBeUndefined();
  });

  it('rotate: the first key signs, every key verifies; a dropped key verifies nothing', () => {
    const before = issueDeviceToken(old, alice, undefined, NOW).token;
    const fresh = issueDeviceToken(rotated, alice, undefined, NOW).token;
    expect(fresh.startsWith('k2.')).toBe(true);
    expect(verifyDeviceToken(rotated, alice, before, NOW)).toBeDefined();
    expect(verifyDeviceToken(rotated, alice, fresh, NOW)).toBeDefined();
    expect(verifyDeviceToken(after, alice, before, NOW)).toBeUndefined();
    expect(verifyDeviceToken(after, alice, fresh, NOW)).toBeDefined();
  });

  it('expire after maxAgeMs and refuse an issue time in the future', () => {
    const { token } = issueDeviceToken(old, alice, undefined, NOW);
    expect(verifyDeviceToken(old, alice, token, NOW + 30 * DAY)).toBeDefined();
    expect(verifyDeviceToken(old, alice, token, NOW + 30 * DAY + 1)).toBeUndefined();
    expect(verifyDeviceToken(old, alice, token, NOW - 10 * 60_000)).toBeUndefined();
  });

  it('are absent when tampered with, malformed or not a string', () => {
    const { token } = issueDeviceToken(old, alice, undefined, NOW);
    const [kid, payload, mac] = token.split('.') as [string, string, string];
    const bobPayload = Buffer.from(JSON.stringify(['i', 'o', 'bob', 'A'.repeat(22), NOW])).toString(
      'base64url',
    );
    for (const bad of [
      `${kid}.${bobPayload}.${mac}`,
      `${kid}.${payload}.${mac.slice(0, -2)}AA`,
      `k9.${payload}.${mac}`,
      `${kid}.${payload}`,
      `${token}.x`,
      '',
      'x'.repeat(5000),
    ]) {
      expect(verifyDeviceToken(old, alice, bad, NOW)).toBeUndefined();
    }
    expect(verifyDeviceToken(old, alice, 42, NOW)).toBeUndefined();
    expect(verifyDeviceToken(old, alice, undefined, NOW)).toBeUndefined();
  });
});
