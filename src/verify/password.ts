import { randomBytes } from 'node:crypto';
import { intOption } from './options';
import * as argon2 from 'argon2';
import { InvalidArgumentError } from '../core/errors';
import { VerifyErrorCodes } from './errors';

/** Default cost parameters: argon2's own defaults (argon2id, 64 MiB, 3 passes, 4 lanes). */
export const DEFAULT_ARGON2_COST = { memoryCost: 65536, timeCost: 3, parallelism: 4 } as const;
/** Longest password accepted, in characters (UTF-16 code units). */
export const MAX_PASSWORD_LENGTH = 1024;

export interface Argon2Cost {
  /** Memory in KiB (argon2 `m`). Default 65536 (64 MiB). */
  readonly memoryCost?: number;
  /** Passes (argon2 `t`). Default 3. */
  readonly timeCost?: number;
  /** Lanes (argon2 `p`). Default 4. */
  readonly parallelism?: number;
}

export interface PasswordVerifierOptions extends Argon2Cost {
  // memoryCost / timeCost / parallelism: the cost of the dummy hash verified for unknown users
  // until a real hash has been verified; from then on the dummy follows the m, t and p of the
  // most recent real hash verified (see createPasswordVerifier). Set them to the parameters of
  // your users' hashes, so that the first unknown users cost the same time too.

  /**
   * Told (once per parameter set) when a verified hash has other m/t/p than the configured cost:
   * the dummy hash then follows the hashes, and the configuration should be corrected.
   * Default: `process.emitWarning` (printed on stderr).
   */
  readonly onWarning?: (message: string) => void;

  /** Longest password accepted (characters). Default 1024. */
  readonly maxPasswordLength?: number;
  /**
   * Bounds on the parameters of a stored hash: a hash outside them is refused as invalid instead
   * of being evaluated (a garbage `m=4294967295` would otherwise allocate 4 TiB).
   * Defaults: 262144 KiB (256 MiB), 32 passes, 64 lanes.
   */
  readonly maxMemoryCost?: number;
  readonly maxTimeCost?: number;
  readonly maxParallelism?: number;
}

export interface PasswordVerifier {
  /**
   * Verifies `password` against an argon2i/argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
   * `encodedHash` undefined (unknown user): verifies against a dummy hash of the configured cost
   * and answers false, so that an unknown user costs the same time as a known one.
   * Throws InvalidArgumentError for a hash that is not such a PHC string (Errors.Password.HashInvalid,
   * field `encodedHash`) and for a password that is not a string or is too long (field `password`).
   */
  verify(encodedHash: string | undefined, password: string): Promise<boolean>;
  /** Resolves when the dummy hash has been made (it is started by createPasswordVerifier). */
  ready(): Promise<void>;
}

type Cost = Required<Argon2Cost>;

interface PasswordConfig {
  readonly cost: Cost;
  readonly maxPasswordLength: number;
  readonly maxMemoryCost: number;
  readonly maxTimeCost: number;
  readonly maxParallelism: number;
}

// $argon2id$v=19$m=65536,t=3,p=4$<salt b64>$<hash b64>; the version segment is optional (then 0x10).
const PHC =
  /^\$(argon2id|argon2i)\$(?:v=(16|19)\$)?([a-z]+=[A-Za-z0-9+/.-]*(?:,[a-z]+=[A-Za-z0-9+/.-]*)*)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;
const DECIMAL = /^(0|[1-9][0-9]{0,9})$/;
const ALLOWED_PARAMS = new Set(['m', 't', 'p', 'data', 'keyid']);

function resolveConfig(options: PasswordVerifierOptions): PasswordConfig {
  const U32 = 2 ** 32 - 1;
  const parallelism = intOption(
    options.parallelism,
    DEFAULT_ARGON2_COST.parallelism,
    'parallelism',
    1,
    2 ** 24 - 1,
  );
  const cost = {
    memoryCost: intOption(
      options.memoryCost,
      DEFAULT_ARGON2_COST.memoryCost,
      'memoryCost',
      8 * parallelism,
      U32,
    ),
    timeCost: intOption(options.timeCost, DEFAULT_ARGON2_COST.timeCost, 'timeCost', 1, U32),
    parallelism,
  };
  return {
    cost,
    maxPasswordLength: intOption(
      options.maxPasswordLength,
      MAX_PASSWORD_LENGTH,
      'maxPasswordLength',
      1,
      1 << 20,
    ),
    maxMemoryCost: intOption(
      options.maxMemoryCost,
      Math.max(262144, cost.memoryCost),
      'maxMemoryCost',
      cost.memoryCost,
      U32,
    ),
    maxTimeCost: intOption(
      options.maxTimeCost,
      Math.max(32, cost.timeCost),
      'maxTimeCost',
      cost.timeCost,
      U32,
    ),
    maxParallelism: intOption(
      options.maxParallelism,
      Math.max(64, cost.parallelism),
      'maxParallelism',
      cost.parallelism,
      2 ** 24 - 1,
    ),
  };
}

function hashInvalid(message: string): InvalidArgumentError {
  return new InvalidArgumentError(VerifyErrorCodes.PasswordHashInvalid, message, 'encodedHash');
}

/**
 * Checks that `encodedHash` is an argon2i/argon2id PHC string with parameters inside the bounds;
 * answers it with its cost parameters.
 */
function checkHash(encodedHash: unknown, config: PasswordConfig): { hash: string; cost: Cost } {
  if (typeof encodedHash !== 'string') throw hashInvalid('encodedHash must be an argon2 PHC string');
  const match = PHC.exec(encodedHash);
  if (!match) {
    throw hashInvalid(
      'encodedHash must be an argon2i or argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)',
    );
  }
  const params = new Map<string, string>();
  for (const pair of (match[3] ?? '').split(',')) {
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    if (!ALLOWED_PARAMS.has(name) || params.has(name))
      throw hashInvalid(`encodedHash has an unknown or repeated parameter "${name}"`);
    params.set(name, pair.slice(eq + 1));
  }
  const num = (name: 'm' | 't' | 'p', max: number): number => {
    const raw = params.get(name);
    if (raw === undefined || !DECIMAL.test(raw))
      throw hashInvalid(`encodedHash must have a decimal parameter ${name}`);
    const value = Number(raw);
    if (value < 1 || value > max)
      throw hashInvalid(`encodedHash parameter ${name}=${raw} is outside 1..${max}`);
    return value;
  };
  const m = num('m', config.maxMemoryCost);
  const t = num('t', config.maxTimeCost);
  const p = num('p', config.maxParallelism);
  if (m < 8 * p) throw hashInvalid('encodedHash parameter m must be at least 8 × p');
  return { hash: encodedHash, cost: { memoryCost: m, timeCost: t, parallelism: p } };
}

const costKey = (c: Cost): string => `m=${c.memoryCost},t=${c.timeCost},p=${c.parallelism}`;
/** Dummy hashes kept besides the configured one (one per parameter set seen last). */
const MAX_FOLLOWED_DUMMIES = 4;
/** Parameter sets warned about, at most (the warning is once per set). */
const MAX_WARNED = 64;

function checkPassword(password: unknown, config: PasswordConfig): string {
  if (typeof password !== 'string') {
    throw new InvalidArgumentError(VerifyErrorCodes.PasswordInvalid, 'password must be a string', 'password');
  }
  if (password.length > config.maxPasswordLength) {
    throw new InvalidArgumentError(
      VerifyErrorCodes.PasswordTooLong,
      `password must be at most ${config.maxPasswordLength} characters`,
      'password',
    );
  }
  return password;
}

/**
 * Creates an argon2 password verifier.
 *
 * Unknown users (no hash) are verified against a dummy hash so that they cost the same time as a
 * known user — which holds only when the dummy has the cost of the real hashes. The dummy starts
 * with the configured cost (made at once, in the background; `ready()` waits for it) and then
 * follows the m, t and p of the most recent real hash verified: a dummy of those parameters is
 * made when they are first seen (at most 4 such dummies are kept). A real hash whose parameters
 * differ from the configured ones is reported once per parameter set through `onWarning`.
 */
export function createPasswordVerifier(options: PasswordVerifierOptions = {}): PasswordVerifier {
  const config = resolveConfig(options);
  const onWarning =
    options.onWarning ?? ((message: string) => process.emitWarning(message, 'LockgateWarning'));
  if (typeof onWarning !== 'function') {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      'onWarning must be a function',
      'onWarning',
    );
  }
  const makeDummy = (cost: Cost): Promise<string> => {
    const made = argon2.hash(randomBytes(32).toString('base64'), { type: argon2.argon2id, ...cost });
    // Surfaced by verify()/ready(); never an unhandled rejection.
    made.catch(() => undefined);
    return made;
  };
  const configuredKey = costKey(config.cost);
  const configured = makeDummy(config.cost);
  // Dummies of the parameters of verified hashes, least recently used first.
  const followed = new Map<string, Promise<string>>();
  const warned = new Set<string>();
  let current = configuredKey;

  /** A real hash of `cost` was verified: unknown users now cost what it costs. */
  const follow = (cost: Cost): void => {
    const key = costKey(cost);
    if (key !== configuredKey && !warned.has(key) && warned.size < MAX_WARNED) {
      warned.add(key);
      try {
        onWarning(
          `password.argon2 is ${configuredKey} but a verified password hash has ${key}: unknown users ` +
            `are now verified against a dummy hash of ${key} (so that they take as long as known ` +
            `users); set password.argon2 (memoryCost, timeCost, parallelism) to your hashes' parameters`,
        );
      } catch {
        // a warning must not change an answer
      }
    }
    if (key === current) return;
    current = key;
    if (key === configuredKey) return;
    const made = followed.get(key) ?? makeDummy(cost);
    followed.delete(key);
    followed.set(key, made);
    while (followed.size > MAX_FOLLOWED_DUMMIES) {
      const oldest = followed.keys().next().value as string;
      followed.delete(oldest);
    }
  };

  const dummyHash = async (): Promise<string> => {
    const made = current === configuredKey ? undefined : followed.get(current);
    if (made) {
      try {
        return await made;
      } catch {
        // could not be made (memory): the configured one below
      }
    }
    return configured;
  };

  return {
    async verify(encodedHash: string | undefined, password: string): Promise<boolean> {
      const pw = checkPassword(password, config);
      if (encodedHash === undefined) {
        // Unknown user: the same work as a known one, then a normal failure.
        await argon2.verify(await dummyHash(), pw);
        return false;
      }
      const { hash, cost } = checkHash(encodedHash, config);
      let ok: boolean;
      try {
        ok = await argon2.verify(hash, pw);
      } catch (cause) {
        // The shape was right but argon2 refused the parameters (salt too short, bad base64…).
        const error = hashInvalid('encodedHash is not a valid argon2 hash');
        error.cause = cause;
        throw error;
      }
      follow(cost);
      return ok;
    },
    async ready(): Promise<void> {
      await configured;
    },
  };
}

/**
 * Hashes `password` with argon2 (argon2id by default) into a PHC string: for examples, tests and
 * seeding. Production hashes come from the auth service.
 */
export async function hashPassword(
  password: string,
  options: Argon2Cost & { readonly type?: 'argon2id' | 'argon2i' } = {},
): Promise<string> {
  return argon2.hash(password, {
    type: options.type === 'argon2i' ? argon2.argon2i : argon2.argon2id,
    memoryCost: options.memoryCost ?? DEFAULT_ARGON2_COST.memoryCost,
    timeCost: options.timeCost ?? DEFAULT_ARGON2_COST.timeCost,
    parallelism: options.parallelism ?? DEFAULT_ARGON2_COST.parallelism,
  });
}
