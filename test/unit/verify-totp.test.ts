import { InvalidArgumentError } from '../../src/core/errors';
import type { Subject } from '../../src/core/subjects';
import { MemoryStore } from '../../src/store/memory/memory-store';
import { createTotpVerifier, generateTotpSecret, totpCode } from '../../src/verify';

const alice: Subject = { instance: 'default', org: '69629023906488334', user: 'alice' };
const bob: Subject = { instance: 'default', org: '69629023906488334', user: 'bob' };
// Mid-step, so that ±1 s of rounding never crosses a step boundary.
const NOW = 1_700_000_015_000;
const STEP_MS = 30_000;
// RFC 6238 appendix B: the ASCII key "12345678901234567890" (20 bytes) in Base32.
const RFC_SECRET = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';

describe('TOTP verifier', () => {
  let store: MemoryStore;
  let now: number;

  beforeEach(() => {
    now = NOW;
    store = new MemoryStore({ now: () => now });
  });
  afterEach(() => store.close());

  const makeVerifier = (extra: { minSecretBytes?: number } = {}) =>
    createTotpVerifier({ store, clock: () => now, ...extra });

  it('computes RFC 6238 codes (SHA-1 test vectors, last 6 digits)', () => {
    expect(totpCode(RFC_SECRET, 59_000)).toBe('287082');
    expect(totpCode(RFC_SECRET, 1_111_111_109_000)).toBe('081804');
    expect(totpCode(RFC_SECRET, 2_000_000_000_000)).toBe('279037');
  });

  it('accepts the current code once and refuses it the second time', async () => {
    const verifier = makeVerifier();
    const secret = generateTotpSecret();
    const code = totpCode(secret, now);
    await expect(verifier.verify(alice, secret, code)).resolves.toBe(true);
    await expect(verifier.verify(alice, secret, code)).resolves.toBe(false);
    // still refused later in the window
    now += STEP_MS;
    await expect(verifier.verify(alice, secret, code)).resolves.toBe(false);
  });

  it('accepts the previous and the next step, not two steps off', async () => {
    const verifier = makeVerifier();
    const secret = generateTotpSecret();
    await expect(verifier.verify(alice, secret, totpCode(secret, now - STEP_MS))).resolves.toBe(true);
    await expect(verifier.verify(alice, secret, totpCode(secret, now + STEP_MS))).resolves.toBe(true);
    await expect(verifier.verify(alice, secret, totpCode(secret, now - 2 * STEP_MS))).resolves.toBe(false);
    await expect(verifier.verify(alice, secret, totpCode(secret, now + 2 * STEP_MS))).resolves.toBe(false);
  });

  it('records the matched time step with useStep, per user', async () => {
    const verifier = makeVerifier();
    const secret = generateTotpSecret();
    const spy = jest.spyOn(store, 'useStep');
    const code = totpCode(secret, now - STEP_MS);
    await expect(verifier.verify(alice, secret, code)).resolves.toBe(true);
    const step = Math.floor((now - STEP_MS) / STEP_MS);
    expect(spy).toHaveBeenCalledWith(alice, 'totp', step, expect.any(Number));
    expect(spy.mock.calls[0]![3]).toBeGreaterThanOrEqual(3 * STEP_MS);
    // Another user with the same secret is not affected by alice's use.
    await expect(verifier.verify(bob, secret, code)).resolves.toBe(true);
  });

  it('answers false for a wrong or malformed code', async () => {
    const verifier = makeVerifier();
    const secret = generateTotpSecret();
    const right = totpCode(secret, now);
    const wrong = ((Number(right) + 1) % 1_000_000).toString().padStart(6, '0');
    for (const code of [wrong, '12345', '1234567', 'abcdef', '', ' ' + right, right + '\n', '12 456']) {
      await expect(verifier.verify(alice, secret, code)).resolves.toBe(false);
    }
    await expect(verifier.verify(alice, secret, right)).resolves.toBe(true);
  });

  it('accepts secrets in lower case, with spaces and padding', async () => {
    const verifier = makeVerifier();
    const secret = generateTotpSecret();
    const spaced = secret.toLowerCase().replace(/(.{4})/g, '$1 ') + '';
    await expect(verifier.verify(alice, spaced, totpCode(secret, now))).resolves.toBe(true);
    await expect(verifier.verify(bob, RFC_SECRET + '====', totpCode(RFC_SECRET, now))).resolves.toBe(true);
  });

  it.each([
    ['empty', ''],
    ['white space only', '   '],
    ['not Base32', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1'],
    ['with symbols', 'GEZDGNBV-GY3TQOJQ!'],
    ['too short (80 bits)', 'JBSWY3DPEHPK3PXP'],
  ])('throws InvalidArgumentError for a secret that is %s', async (_name, secret) => {
    const error = await makeVerifier()
      .verify(alice, secret, '123456')
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ code: 'Errors.Totp.SecretInvalid', field: 'secret', grpcCode: 3 });
  });

  it('accepts legacy 80-bit secrets when minSecretBytes is lowered', async () => {
    const verifier = makeVerifier({ minSecretBytes: 10 });
    await expect(verifier.verify(alice, 'JBSWY3DPEHPK3PXP', totpCode('JBSWY3DPEHPK3PXP', now))).resolves.toBe(
      true,
    );
  });

  it('uses the real clock by default', async () => {
    const verifier = createTotpVerifier({ store });
    const secret = generateTotpSecret();
    await expect(verifier.verify(alice, secret, totpCode(secret))).resolves.toBe(true);
  });

  it('generates 160-bit Base32 secrets', () => {
    const a = generateTotpSecret();
    expect(a).toMatch(/^[A-Z2-7]{32}$/);
    expect(generateTotpSecret()).not.toBe(a);
  });

  it('validates its options when created', () => {
    expect(() => createTotpVerifier({ store, window: -1 })).toThrow(InvalidArgumentError);
    expect(() => createTotpVerifier({ store, step: 0 })).toThrow(/step/);
    expect(() => createTotpVerifier({ store: {} as MemoryStore })).toThrow(/store/);
  });
});
