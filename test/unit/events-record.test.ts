/**
 * The event record (issue 14, src/core/events.ts): engine events become records with an id, a
 * time, an org, a user, a type and an actor; event types the mapping table does not know are
 * recorded under their own name with their fields; credentials never are, at any depth.
 */
import { CREDENTIAL_FIELDS, EVENT_TYPES, renderEvent, toEventRecord } from '../../src/core/events';

describe('toEventRecord', () => {
  it('maps a lock by failures: type user.locked, actor system, factor and count in data (its caller is not recorded)', () => {
    const r = toEventRecord(
      {
        type: 'lock',
        org: 'o',
        user: 'u',
        reason: 'failures',
        factor: 'password',
        failedAttempts: 5,
        caller: 'login-service',
      },
      'inst',
      1_700_000_000_000,
    );
    expect(r).toEqual({
      id: expect.stringMatching(/^evt_[a-z2-7]{26}$/),
      time: 1_700_000_000_000,
      org: 'o',
      user: 'u',
      type: 'user.locked',
      actor: { type: 'system' },
      data: { reason: 'failures', factor: 'password', failedAttempts: 5 },
    });
  });

  it('keeps the actor of an admin operation and gives every record its own id', () => {
    const event = { type: 'unlock', org: 'o', user: 'u', actor: { type: 'jwt', subject: 's-1' } } as const;
    const a = toEventRecord(event, 'inst')!;
    const b = toEventRecord(event, 'inst')!;
    expect(a.actor).toEqual({ type: 'jwt', subject: 's-1' });
    expect(a.type).toBe('user.unlocked');
    expect(a.id).not.toBe(b.id);
  });

  it('records a settings change under its org, or the instance id for instance settings, with before and after', () => {
    const org = toEventRecord(
      {
        type: 'settings',
        owner: { type: 'org', org: 'o' },
        op: 'update',
        before: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
        after: { maxPasswordAttempts: 5, maxOtpAttempts: 3 },
      },
      'inst',
    )!;
    expect(org).toMatchObject({
      org: 'o',
      type: 'settings.changed',
      data: { op: 'update', before: { maxPasswordAttempts: 3 }, after: { maxPasswordAttempts: 5 } },
    });
    expect(org.user).toBeUndefined();
    const instance = toEventRecord({ type: 'settings', owner: { type: 'instance' }, op: 'set' }, 'inst')!;
    expect(instance.org).toBe('inst');
  });

  it('records an automatic unlock (a field an engine event may carry) with the system as actor', () => {
    const r = toEventRecord({ type: 'unlock', org: 'o', user: 'u', reason: 'automatic' }, 'inst')!;
    expect(r).toMatchObject({
      type: 'user.unlocked',
      actor: { type: 'system' },
      data: { reason: 'automatic' },
    });
  });

  it('does not record checks (they are counted in /metrics)', () => {
    expect(EVENT_TYPES.check).toBeNull();
    expect(
      toEventRecord({ type: 'check', org: 'o', user: 'u', factor: 'password', outcome: 'failure' }, 'i'),
    ).toBe(undefined);
  });

  it('records a type it does not know under its own name, with its fields, and never a credential field at any depth', () => {
    const r = toEventRecord(
      {
        type: 'device_scope_lock',
        org: 'o',
        user: 'u',
        scope: { device: 'd-1', ip: '10.0.0.1', token: 'device-token-secret' },
        lockedUntil: 123,
        password: 'hunter2',
        Code: '123456',
        nested: [{ secret: 'totp-secret', keep: 1 }],
        maxPasswordAttempts: 4,
      },
      'inst',
    )!;
    expect(r.type).toBe('device_scope_lock');
    expect(r.data).toEqual({
      scope: { device: 'd-1', ip: '10.0.0.1' },
      lockedUntil: 123,
      nested: [{ keep: 1 }],
      maxPasswordAttempts: 4,
    });
    const text = JSON.stringify(r);
    for (const s of ['hunter2', '123456', 'totp-secret', 'device-token-secret'])
      expect(text).not.toContain(s);
    expect(CREDENTIAL_FIELDS.has('password')).toBe(true);
  });

  it('renders with orgId, userId and an RFC 3339 time', () => {
    const r = toEventRecord({ type: 'password_changed', org: 'o', user: 'u' }, 'i', 0)!;
    expect(renderEvent(r)).toEqual({
      id: r.id,
      time: '1970-01-01T00:00:00.000Z',
      orgId: 'o',
      userId: 'u',
      type: 'user.password_changed',
      actor: { type: 'system' },
      data: {},
    });
  });

  it('renders the instants of its data (lockedAt, lockedUntil, until) as RFC 3339, as its time', () => {
    const r = toEventRecord(
      {
        type: 'lock',
        org: 'o',
        user: 'u',
        reason: 'failures',
        lockedAt: 0,
        lockedUntil: 60_000,
        failedAttempts: 3,
      },
      'i',
      0,
    )!;
    expect(r.data).toMatchObject({ lockedAt: 0, lockedUntil: 60_000 });
    expect(renderEvent(r).data).toEqual({
      reason: 'failures',
      lockedAt: '1970-01-01T00:00:00.000Z',
      lockedUntil: '1970-01-01T00:01:00.000Z',
      failedAttempts: 3,
    });
    const t = toEventRecord({ type: 'throttle', ip: '203.0.113.7/32', until: 1000, failures: 5 }, 'i', 0)!;
    expect(renderEvent(t)).toMatchObject({
      orgId: 'i',
      type: 'client.throttled',
      data: { ip: '203.0.113.7/32', until: '1970-01-01T00:00:01.000Z', failures: 5 },
    });
  });
});
