/**
 * The in-process event log (memory store) and the webhook sender's pure parts: pages newest
 * first that follow their cursor to the end, the ring's bound, filters; the backoff's cap; the
 * secret format; a payload signed as the sender signs it verifies with the standardwebhooks
 * verifier.
 */
import { Webhook } from 'standardwebhooks';
import { toEventRecord, type EventRecord } from '../../src/core/events';
import { MemoryEventLog } from '../../src/events/memory-event-log';
import { backoff, endpointKey, isWebhookSecret, webhookPayload } from '../../src/events/webhooks';

const record = (org: string, user: string, type = 'lock'): EventRecord =>
  toEventRecord({ type, org, user, reason: 'admin' }, 'inst')!;

describe('MemoryEventLog', () => {
  it('pages newest first, following nextCursor to the end, per org', async () => {
    const log = new MemoryEventLog();
    for (let i = 0; i < 7; i += 1) await log.append(record('o', `u${i}`));
    await log.append(record('other', 'x'));
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await log.list('o', { limit: 3, ...(cursor ? { cursor } : {}) });
      seen.push(...page.events.map((e) => e.user!));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['u6', 'u5', 'u4', 'u3', 'u2', 'u1', 'u0']);
  });

  it('keeps at most maxEvents (the oldest go first) and filters by user and type', async () => {
    const log = new MemoryEventLog({ maxEvents: 3 });
    await log.append(record('o', 'a'));
    await log.append(record('o', 'b', 'unlock'));
    await log.append(record('o', 'b'));
    await log.append(record('o', 'c'));
    expect((await log.list('o', {})).events.map((e) => e.user)).toEqual(['c', 'b', 'b']);
    expect((await log.list('o', { user: 'b', type: 'user.unlocked' })).events).toHaveLength(1);
  });

  it('refuses a cursor that is not one of its own', async () => {
    await expect(new MemoryEventLog().list('o', { cursor: '1-0' })).rejects.toMatchObject({
      code: 'Errors.List.Cursor',
    });
  });
});

describe('webhook parts', () => {
  it('backs off exponentially from initialDelayMs up to maxDelayMs', () => {
    const retry = { initialDelayMs: 100, maxDelayMs: 1000, maxAttempts: 10 };
    expect([1, 2, 3, 4, 5, 40].map((n) => backoff(retry, n))).toEqual([100, 200, 400, 800, 1000, 1000]);
  });

  it('accepts whsec_ secrets of at least 24 bytes only', () => {
    expect(isWebhookSecret(`whsec_${Buffer.alloc(24, 1).toString('base64')}`)).toBe(true);
    expect(isWebhookSecret(`whsec_${Buffer.alloc(8, 1).toString('base64')}`)).toBe(false);
    expect(isWebhookSecret('a-plain-password')).toBe(false);
  });

  it('keys a disabled endpoint by its name and URL', () => {
    expect(endpointKey({ name: 'a', url: 'https://x/1' })).not.toBe(
      endpointKey({ name: 'a', url: 'https://x/2' }),
    );
  });

  it('a payload signed with the endpoint secret verifies, and carries the rendered event', () => {
    const secret = `whsec_${Buffer.alloc(32, 5).toString('base64')}`;
    const event = record('o', 'u');
    const body = webhookPayload(event);
    const now = new Date();
    const signature = new Webhook(secret).sign(event.id, now, body);
    const verified = new Webhook(secret).verify(body, {
      'webhook-id': event.id,
      'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
      'webhook-signature': signature,
    }) as { type: string; data: { id: string; orgId: string; userId: string } };
    expect(verified).toMatchObject({ type: 'user.locked', data: { id: event.id, orgId: 'o', userId: 'u' } });
  });
});
