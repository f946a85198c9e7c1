import argon2 = require('argon2');
import { InvalidArgumentError } from '../../src/core/errors';
import { createPasswordVerifier, hashPassword } from '../../src/verify';

// Small costs keep the suite fast; the verifier's dummy hash uses the same ones.
const COST = { memoryCost: 4096, timeCost: 2, parallelism: 1 } as const;

/** Type and m/t/p of a PHC string (node-argon2 writes them as m,p,t; others as m,t,p). */
function phcParams(encoded: string): { type: string; m: number; t: number; p: number } {
  const [, type = '', , params = ''] = encoded.split('$');
  const map = Object.fromEntries(params.split(',').map((kv) => kv.split('=') as [string, string]));
  return { type, m: Number(map.m), t: Number(map.t), p: Number(map.p) };
}

describe('password verifier (argon2)', () => {
  const verifier = createPasswordVerifier(COST);
  let idHash: string;
  let iHash: string;

  beforeAll(async () => {
    idHash = await hashPassword('correct horse', COST);
    iHash = await hashPassword('battery staple', { ...COST, type: 'argon2i' });
    await verifier.ready();
  });

  afterEach(() => jest.restoreAllMocks());

  it('verifies an argon2id hash', async () => {
    expect(phcParams(idHash)).toEqual({ type: 'argon2id', m: 4096, t: 2, p: 1 });
    await expect(verifier.verify(idHash, 'correct horse')).resolves.toBe(true);
  });

  it('verifies an argon2i hash', async () => {
    expect(phcParams(iHash).type).toBe('argon2i');
    await expect(verifier.verify(iHash, 'battery staple')).resolves.toBe(true);
  });

  it('accepts the m,t,p parameter order of other hashers (ZITADEL, the argon2 CLI)', async () => {
    const [, type, version, params = '', salt, hash] = idHash.split('$');
    const map = Object.fromEntries(params.split(',').map((kv) => kv.split('=') as [string, string]));
    const reordered = `$${type}$${version}$m=${map.m},t=${map.t},p=${map.p}$${salt}$${hash}`;
    expect(reordered).not.toBe(idHash);
    await expect(verifier.verify(reordered, 'correct horse')).resolves.toBe(true);
  });

  it('verifies hashes made with other parameters than its own', async () => {
    const other = await hashPassword('pw', { memoryCost: 2048, timeCost: 1, parallelism: 2 });
    await expect(verifier.verify(other, 'pw')).resolves.toBe(true);
  });

  it('answers false for a wrong password', async () => {
    await expect(verifier.verify(idHash, 'correct horse ')).resolves.toBe(false);
    await expect(verifier.verify(iHash, '')).resolves.toBe(false);
  });

  it('unknown user (no hash): verifies against a dummy hash of the same cost and answers false', async () => {
    const spy = jest.spyOn(argon2, 'verify');
    await expect(verifier.verify(undefined, 'correct horse')).resolves.toBe(false);
    expect(spy).toHaveBeenCalledTimes(1);
    const [dummy, password] = spy.mock.calls[0]!;
    expect(phcParams(dummy)).toEqual({ type: 'argon2id', m: 4096, t: 2, p: 1 });
    expect(password).toBe('correct horse');
  });

  it('makes the dummy hash with argon2 defaults when no cost is given', async () => {
    const spy = jest.spyOn(argon2, 'verify').mockResolvedValue(true);
    const defaults = createPasswordVerifier();
    await expect(defaults.verify(undefined, 'x')).resolves.toBe(false); // false even if the dummy "matched"
    expect(phcParams(spy.mock.calls[0]![0])).toEqual({ type: 'argon2id', m: 65536, t: 3, p: 4 });
  });

  it.each([
    ['an empty string', ''],
    ['a bcrypt hash', '$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy'],
    ['plain text', 'correct horse'],
    ['argon2d', '$argon2d$v=19$m=4096,t=2,p=1$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8'],
    [
      'an unknown version',
      '$argon2id$v=20$m=4096,t=2,p=1$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8',
    ],
    [
      'a missing parameter',
      '$argon2id$v=19$m=4096,t=2$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8',
    ],
    [
      'a huge memory cost',
      '$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8',
    ],
    ['m below 8·p', '$argon2id$v=19$m=8,t=2,p=4$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8'],
    [
      'a salt too short for argon2',
      '$argon2id$v=19$m=4096,t=2,p=1$c2FsdA$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8',
    ],
    [
      'trailing garbage',
      '$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8$x',
    ],
  ])('throws InvalidArgumentError for %s', async (_name, encodedHash) => {
    const error = await verifier.verify(encodedHash, 'pw').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ code: 'Errors.Password.HashInvalid', field: 'encodedHash', grpcCode: 3 });
  });

  it('accepts passwords up to 1024 characters and refuses longer ones', async () => {
    const long = 'p'.repeat(1024);
    await expect(verifier.verify(await hashPassword(long, COST), long)).resolves.toBe(true);
    const error = await verifier.verify(idHash, long + 'p').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ code: 'Errors.Password.TooLong', field: 'password' });
    await expect(verifier.verify(undefined, long + 'p')).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('validates its options when created', () => {
    expect(() => createPasswordVerifier({ memoryCost: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => createPasswordVerifier({ parallelism: 4, memoryCost: 16 })).toThrow(/memoryCost/);
  });
});

describe('the dummy hash for unknown users follows the cost of the hashes verified', () => {
  // Configured much dearer than the users' hashes: password.argon2 does not match them.
  const CONFIGURED = { memoryCost: 32768, timeCost: 3, parallelism: 1 } as const;
  const USERS = { memoryCost: 4096, timeCost: 1, parallelism: 1 } as const;

  afterEach(() => jest.restoreAllMocks());

  /** The m/t/p of the hash argon2.verify was given for an unknown user. */
  async function dummyParams(verifier: ReturnType<typeof createPasswordVerifier>) {
    const spy = jest.spyOn(argon2, 'verify');
    await expect(verifier.verify(undefined, 'guess')).resolves.toBe(false);
    expect(spy).toHaveBeenCalledTimes(1);
    const params = phcParams(spy.mock.calls[0]![0]);
    spy.mockRestore();
    return params;
  }

  it('uses the m, t and p of the most recent real hash verified (exact), and warns once per set', async () => {
    const warnings: string[] = [];
    const verifier = createPasswordVerifier({ ...CONFIGURED, onWarning: (m) => warnings.push(m) });
    await verifier.ready();
    // Nothing verified yet: the configured cost.
    expect(await dummyParams(verifier)).toEqual({ type: 'argon2id', m: 32768, t: 3, p: 1 });

    const known = await hashPassword('pw', USERS);
    await expect(verifier.verify(known, 'wrong')).resolves.toBe(false);
    expect(await dummyParams(verifier)).toEqual({ type: 'argon2id', m: 4096, t: 1, p: 1 });
    await expect(verifier.verify(known, 'pw')).resolves.toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('m=32768,t=3,p=1');
    expect(warnings[0]).toContain('m=4096,t=1,p=1');

    // Another cost (argon2i, m,t,p order as other hashers write it) is followed too.
    const other = await hashPassword('pw', {
      memoryCost: 2048,
      timeCost: 2,
      parallelism: 2,
      type: 'argon2i',
    });
    await expect(verifier.verify(other, 'pw')).resolves.toBe(true);
    expect(await dummyParams(verifier)).toEqual({ type: 'argon2id', m: 2048, t: 2, p: 2 });
    expect(warnings).toHaveLength(2);

    // Back to hashes of the configured cost: the configured dummy, and no warning.
    await expect(verifier.verify(await hashPassword('pw', CONFIGURED), 'pw')).resolves.toBe(true);
    expect(await dummyParams(verifier)).toEqual({ type: 'argon2id', m: 32768, t: 3, p: 1 });
    await expect(verifier.verify(known, 'pw')).resolves.toBe(true);
    expect(warnings).toHaveLength(2);
  });

  it('a malformed or refused hash changes nothing', async () => {
    const warnings: string[] = [];
    const verifier = createPasswordVerifier({ ...CONFIGURED, onWarning: (m) => warnings.push(m) });
    const bad = '$argon2id$v=19$m=4096,t=2,p=1$c2FsdA$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8';
    await expect(verifier.verify(bad, 'pw')).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(await dummyParams(verifier)).toEqual({ type: 'argon2id', m: 32768, t: 3, p: 1 });
    expect(warnings).toEqual([]);
  });

  it("an unknown user's verification takes as long as a known user's (medians of 15 interleaved runs within 0.5–2×)", async () => {
    const verifier = createPasswordVerifier({ ...CONFIGURED, onWarning: () => undefined });
    await verifier.ready();
    const known = await hashPassword('pw', USERS);
    await verifier.verify(known, 'warm-up');
    await verifier.verify(undefined, 'warm-up');
    const time = async (hash: string | undefined): Promise<number> => {
      const started = process.hrtime.bigint();
      await verifier.verify(hash, 'wrong');
      return Number(process.hrtime.bigint() - started) / 1e6;
    };
    const knownMs: number[] = [];
    const unknownMs: number[] = [];
    for (let i = 0; i < 15; i += 1) {
      knownMs.push(await time(known));
      unknownMs.push(await time(undefined));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const ratio = median(unknownMs) / median(knownMs);
    // Before the dummy followed the hashes this was about 8× (m=32768,t=3 against m=4096,t=1).
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(2);
  });
});
