/**
 * The effective configuration as `lockgate config check` prints it: every secret masked. Tokens
 * (only their digests are kept, masked too: a digest lets anyone test guesses offline), Redis
 * URLs' passwords and Redis passwords, the OTP pepper, and webhook secrets (and their URLs' credentials).
 */
import type { SidecarConfig } from '../sidecar/config';

export const MASK = '********';

export function maskConfig(config: SidecarConfig): Record<string, unknown> {
  // A JSON copy: plain data only, and nothing shared with the configuration.
  const out = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
  const auth = out.auth as { tokens: Array<Record<string, unknown>> };
  auth.tokens = auth.tokens.map((t) => ({ ...t, sha256: MASK }));
  const store = out.store as { redis: Record<string, unknown> & { sentinel?: Record<string, unknown> } };
  const redis = store.redis;
  if (typeof redis.url === 'string') redis.url = maskUrl(redis.url);
  if (redis.password !== undefined) redis.password = MASK;
  if (redis.sentinel?.password !== undefined) redis.sentinel.password = MASK;
  // Webhook secrets (whsec_…) sign every delivery.
  const webhooks = out.webhooks as { endpoints?: Array<Record<string, unknown>> } | undefined;
  if (webhooks?.endpoints) {
    webhooks.endpoints = webhooks.endpoints.map((e) => ({
      ...e,
      secret: MASK,
      ...(typeof e.url === 'string' ? { url: maskUrl(e.url) } : {}),
    }));
  }
  const otp = out.otp as Record<string, unknown>;
  if (otp.pepper !== undefined) otp.pepper = MASK;
  const repeat = (out.defences as { repeatPassword?: Record<string, unknown> } | undefined)?.repeatPassword;
  if (repeat?.key !== undefined) repeat.key = MASK;
  const device = (out.defences as { deviceCookies?: { keys?: Array<Record<string, unknown>> } } | undefined)
    ?.deviceCookies;
  if (device?.keys) device.keys = device.keys.map((k) => ({ ...k, secret: MASK }));
  // The issuer's URLs may carry credentials (https://user:secret@idp/keys?api_key=…).
  const jwt = (out.auth as { jwt?: Record<string, unknown> }).jwt;
  for (const key of ['issuer', 'jwksUri'] as const) {
    if (jwt && typeof jwt[key] === 'string' && jwt[key] !== 'discovery') jwt[key] = maskUrl(jwt[key]);
  }
  return out;
}

/** `redis://user:secret@host:6379/0` → `redis://user:********@host:6379/0`; unparsable: all masked. */
function maskUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return MASK;
  }
  if (url.password !== '') url.password = MASK;
  else if (url.username !== '') url.username = MASK; // redis://secret@host: the password alone
  if (url.search !== '') url.search = `?${MASK}`;
  return url.href;
}
