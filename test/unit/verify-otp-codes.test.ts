import { GrpcCode, InvalidArgumentError } from '../../src/core/errors';
import type { Subject } from '../../src/core/subjects';
import { MemoryStore } from '../../src/store/memory/memory-store';
import { createIssueLimiter, createOtpCodes, RateLimitedError } from '../../src/verify';

const alice: Subject = { instance: 'default', org: 'org-a', user: 'alice' };
const bob: Subject = { instance: 'default', org: 'org-a', user: 'bob' };
const PEPPER = 'a-shared-pepper-of-enough-length';

const otherCode = (code: string): string => ((Number(code) + 1) % 1_000_000).toString().padStart(6, '0');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('issued SMS/Email codes', () => {
  let store: MemoryStore;
  beforeEach(() => {
    store = new MemoryStore();
  });
  afterEach(() => store.close());

  const makeCodes = (extra: Partial<Parameters<typeof createOtpCodes>[0]> = {}) =>
    createOtpCodes({ store, pepper: PEPPER, limiter: createIssueLimiter({ points: 100 }), ...extra });

  it('issues a 6-digit code that verifies once', async () => {
    const codes = makeCodes();
    const before = Date.now();
    const { code, expiresAt } = await codes.issue(alice, 'sms');
    expect(code).toMatch(/^[0-9]{6}$/);
    expect(expiresAt).toBeGreaterThanOrEqual(before + 5 * 60_000);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 5 * 60_000);
    await expect(codes.verify(alice, 'sms', code)).resolves.toBe(true);
    await expect(codes.verify(alice, 'sms', code)).resolves.toBe(false);
  });

  it('gives email codes 10 minutes by default', async () => {
    const { expiresAt } = await makeCodes().issue(alice, 'email');
    expect(expiresAt - Date.now()).toBeGreaterThan(10 * 60_000 - 5_000);
  });

  it('stores only a hash of the code', async () => {
    const spy = jest.spyOn(store, 'putCode');
    const { code } = await makeCodes().issue(alice, 'sms');
    const [, channel, hash, ttl] = spy.mock.calls[0]!;
    expect(channel).toBe('sms');
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(hash).not.toContain(code);
    expect(ttl).toBe(5 * 60_000);
  });

  it('a wrong code is false and leaves the issued code valid', async () => {
    const codes = makeCodes();
    const { code } = await codes.issue(alice, 'email');
    await expect(codes.verify(alice, 'email', otherCode(code))).resolves.toBe(false);
    for (const bad of ['', '12345', '1234567', 'abcdef', ` ${code}`]) {
      await expect(codes.verify(alice, 'email', bad)).resolves.toBe(false);
    }
    await expect(codes.verify(alice, 'email', code)).resolves.toBe(true);
  });

  it('a new code replaces the old one', async () => {
    const codes = makeCodes();
    const first = await codes.issue(alice, 'sms');
    let second = await codes.issue(alice, 'sms');
    while (second.code === first.code) second = await codes.issue(alice, 'sms'); // 1 in a million
    await expect(codes.verify(alice, 'sms', first.code)).resolves.toBe(false);
    await expect(codes.verify(alice, 'sms', second.code)).resolves.toBe(true);
  });

  it('codes are bound to their user and channel', async () => {
    const codes = makeCodes();
    const { code } = await codes.issue(alice, 'sms');
    await expect(codes.verify(bob, 'sms', code)).resolves.toBe(false);
    await expect(codes.verify(alice, 'email', code)).resolves.toBe(false);
    await expect(codes.verify(alice, 'sms', code)).resolves.toBe(true);
  });

  it('an expired code is false', async () => {
    const codes = makeCodes({ ttlMs: { sms: 150 } });
    const { code, expiresAt } = await codes.issue(alice, 'sms');
    expect(expiresAt - Date.now()).toBeLessThanOrEqual(150);
    await sleep(300);
    await expect(codes.verify(alice, 'sms', code)).resolves.toBe(false);
  });

  it('a code never issued is false', async () => {
    await expect(makeCodes().verify(alice, 'sms', '123456')).resolves.toBe(false);
  });

  it('processes sharing the pepper share codes; another pepper does not match', async () => {
    const { code } = await makeCodes().issue(alice, 'sms');
    await expect(makeCodes({ pepper: 'some-other-pepper-value' }).verify(alice, 'sms', code)).resolves.toBe(
      false,
    );
    await expect(makeCodes().verify(alice, 'sms', code)).resolves.toBe(true);
  });

  it('without a pepper, a random one is made per verifier', async () => {
    const a = createOtpCodes({ store });
    const { code } = await a.issue(alice, 'sms');
    await expect(createOtpCodes({ store }).verify(alice, 'sms', code)).resolves.toBe(false);
    await expect(a.verify(alice, 'sms', code)).resolves.toBe(true);
  });

  it('the 6th issue within the window throws RateLimitedError (default 5 per 15 minutes)', async () => {
    const codes = createOtpCodes({ store, pepper: PEPPER });
    let last = '';
    for (let i = 0; i < 5; i++) last = (await codes.issue(alice, 'sms')).code;
    const error = await codes.issue(alice, 'sms').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(error).toMatchObject({ code: 'Errors.Otp.TooManyCodes', grpcCode: GrpcCode.ResourceExhausted });
    const retryAfterMs = (error as RateLimitedError).retryAfterMs;
    expect(retryAfterMs).toBeGreaterThan(14 * 60_000);
    expect(retryAfterMs).toBeLessThanOrEqual(15 * 60_000);
    // The refused issue did not replace the last code; other users are not limited.
    await expect(codes.verify(alice, 'sms', last)).resolves.toBe(true);
    await expect(codes.issue(bob, 'sms')).resolves.toMatchObject({ code: expect.any(String) });
  });

  it('uses the limiter it is given, keyed per user and channel', async () => {
    const consume = jest.fn(async (_key: string) => undefined);
    const codes = makeCodes({ limiter: { consume } });
    await codes.issue(alice, 'sms');
    await codes.issue({ ...alice, user: 'al:ice}' }, 'email');
    expect(consume.mock.calls[0]![0]).toBe('{default:org-a:alice}:sms');
    expect(consume.mock.calls[1]![0]).toBe('{default:org-a:al%3Aice%7D}:email');
  });

  it('refuses an unknown channel and bad options', async () => {
    await expect(makeCodes().issue(alice, 'fax' as 'sms')).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(() => makeCodes({ pepper: 'short' })).toThrow(/pepper/);
    expect(() => makeCodes({ ttlMs: { email: 0 } })).toThrow(/ttlMs\.email/);
  });
});
