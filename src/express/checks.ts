import type { CheckOptions, CheckResult, LockoutEngine } from '../core/engine';
import { BusyError, InvalidArgumentError, StoreUnavailableError, UserLockedError } from '../core/errors';
import type { IncomingMessage } from 'node:http';
import { throttledCheck, type SprayThrottle } from '../core/spray-throttle';
import type { CodeChannel } from '../core/store';
import { makeSubject, validateFactor, type Factor, type Subject } from '../core/subjects';
import { clientIp } from '../http/client-ip';
import { VerifyErrorCodes } from '../verify/errors';
import type { OtpCodes } from '../verify/otp-codes';
import type { PasswordVerifier } from '../verify/password';
import type { TotpVerifier } from '../verify/totp';
import { describe, type LockoutErrorContext } from './options';

/**
 * Checks that wrap a verifier in the reservation protocol: reserve an attempt (a locked user's
 * credential is never evaluated), evaluate, settle. Each resolves to a typed result — a wrong
 * credential is a normal result, not an error — or rejects with a coded error:
 * UserLockedError (locked), BusyError (G2: retry after `retryAfterMs`), StoreUnavailableError
 * (fail-closed), CheckTimeoutError (the evaluation outlived `evaluationTimeoutMs`; released
 * uncounted), CheckAbortedError (the attempt was cleared meanwhile), RateLimitedError (too many codes issued), InvalidArgumentError (bad input).
 */

/** The result of a check. */
export type LockoutCheckResult =
  | {
      readonly ok: true;
      readonly failedAttempts: 0;
      readonly locked: false;
      /** Device cookies: the device token to set as the client's cookie (lockout.deviceCookie.write). */
      readonly deviceToken?: string;
    }
  | {
      readonly ok: false;
      /** The factor's failed attempts after this one (0 when counted nowhere: fail-open). */
      readonly failedAttempts: number;
      /** Whether this failure locked the user (later checks throw UserLockedError). */
      readonly locked: boolean;
    };

/**
 * Who is checking (issue 12's defences; each field is ignored while its defence is off):
 *   - spray throttling (`defences.sprayThrottle`): the request (its client is read as `req.ip` is,
 *     with the app's "trust proxy"), or the client's IP itself; without either, a check is not
 *     throttled;
 *   - device cookies (`defences.deviceCookies`): the client's device token, e.g.
 *     `lockout.deviceCookie.read(req)`. A valid one counts the check on that device's own scope;
 *     without one it counts on the untrusted scope.
 */
export interface CheckContext {
  readonly req?: IncomingMessage;
  readonly clientIp?: string;
  readonly deviceToken?: string;
}

/** A code issued for the caller to deliver. */
export interface IssuedCode {
  /** 6 digits. */
  readonly code: string;
  /** When it stops being accepted (ms since the epoch). */
  readonly expiresAt: number;
}

export interface LockoutChecks {
  /**
   * Verifies `password` against the user's argon2 PHC hash. `encodedHash` undefined (unknown
   * user): a dummy verification of the same cost and a normal failure.
   */
  password(
    org: string,
    user: string,
    encodedHash: string | undefined,
    password: string,
    context?: CheckContext,
  ): Promise<LockoutCheckResult>;
  /**
   * Verifies a 6-digit RFC 6238 code against the user's Base32 secret; a code is accepted once.
   * Its replay protection needs the store, so it throws StoreUnavailableError while the store is
   * down, fail-open included.
   */
  totp(
    org: string,
    user: string,
    secret: string,
    code: string,
    context?: CheckContext,
  ): Promise<LockoutCheckResult>;
  /** Issues a 6-digit code for the caller to send; refuses a locked user (UserLockedError). */
  issueCode(org: string, user: string, channel: CodeChannel): Promise<IssuedCode>;
  /** Verifies the code issued last on `channel` (factor otp_sms or otp_email); single use. */
  verifyCode(
    org: string,
    user: string,
    channel: CodeChannel,
    code: string,
    context?: CheckContext,
  ): Promise<LockoutCheckResult>;
  /** Any credential: `verifier` answers true when it is right. A verifier that throws releases the attempt uncounted. */
  check(
    org: string,
    user: string,
    factor: Factor,
    verifier: () => Promise<boolean> | boolean,
    context?: CheckContext,
  ): Promise<LockoutCheckResult>;
}

/** The engine's options of a check's context: its device token (device cookies). */
function deviceOption(context: CheckContext | undefined): CheckOptions | undefined {
  const token = context?.deviceToken;
  return typeof token === 'string' ? { deviceToken: token } : undefined;
}

export interface ChecksContext {
  /** The engine applies G4 (onStoreError) and compensates what the store could not settle. */
  readonly engine: LockoutEngine;
  readonly passwordVerifier: () => PasswordVerifier;
  readonly totpVerifier: TotpVerifier;
  readonly otpCodes: OtpCodes;
  readonly report: (error: unknown, context: LockoutErrorContext) => void;
  /** Spray throttling, when on (ThrottledError before anything is evaluated). */
  readonly throttle?: SprayThrottle;
}

/** The client IP of a check's context. */
function contextIp(context: CheckContext | undefined): string | undefined {
  if (context === undefined) return undefined;
  if (context.clientIp !== undefined)
    return typeof context.clientIp === 'string' ? context.clientIp : undefined;
  return context.req ? clientIp(context.req) : undefined;
}

const OK: LockoutCheckResult = Object.freeze({ ok: true, failedAttempts: 0, locked: false });

const FACTOR_OF_CHANNEL: Readonly<Record<CodeChannel, Factor>> = { sms: 'otp_sms', email: 'otp_email' };

function checkChannel(channel: unknown): CodeChannel {
  if (channel !== 'sms' && channel !== 'email') {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OtpChannelInvalid,
      `channel must be 'sms' or 'email', got ${describe(channel)}`,
      'channel',
    );
  }
  return channel;
}

function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(
      value === undefined || value === null ? 'Errors.Request.Missing' : 'Errors.Request.Invalid',
      `${field} must be a string`,
      field,
    );
  }
  return value;
}

export function createChecks(ctx: ChecksContext): LockoutChecks {
  const { engine, report } = ctx;

  /**
   * The engine's check, its result as a LockoutCheckResult. Store down: fail-closed rejects with
   * StoreUnavailableError (reported `refused`); fail-open answers from the credential alone
   * (reported `unguarded`). A credential that needs the store to be verified (SMS/Email codes,
   * TOTP replay protection) rejects with StoreUnavailableError in both modes.
   */
  const run = async (
    org: string,
    user: string,
    factor: Factor,
    evaluate: (subject: Subject) => Promise<boolean> | boolean,
    options?: CheckOptions,
    checkContext?: CheckContext,
  ): Promise<LockoutCheckResult> => {
    const subject = makeSubject(engine.instanceId, org, user);
    const context = { operation: 'check', factor, orgId: subject.org, userId: subject.user } as const;
    let result: CheckResult;
    try {
      result = ctx.throttle
        ? await throttledCheck(
            ctx.throttle,
            contextIp(checkContext),
            () => evaluate(subject),
            (judged) => engine.check(org, user, factor, judged, options),
          )
        : await engine.check(org, user, factor, () => evaluate(subject), options);
    } catch (error) {
      if (error instanceof StoreUnavailableError) report(error, { ...context, outcome: 'refused' });
      throw error;
    }
    switch (result.outcome) {
      case 'success':
        if (result.enforced === false) report(result.storeError, { ...context, outcome: 'unguarded' });
        return result.deviceToken === undefined
          ? OK
          : { ok: true, failedAttempts: 0, locked: false, deviceToken: result.deviceToken };
      case 'failure':
        if (result.enforced === false) report(result.storeError, { ...context, outcome: 'unguarded' });
        return { ok: false, failedAttempts: result.failedAttempts, locked: result.locked };
      case 'locked':
        throw new UserLockedError(result.lockedAt);
      case 'busy':
        throw new BusyError(result.retryAfterMs);
    }
  };

  return {
    async password(org, user, encodedHash, password, context) {
      requireString(password, 'password');
      if (encodedHash !== undefined && typeof encodedHash !== 'string') {
        throw new InvalidArgumentError(
          'Errors.Request.Invalid',
          'encodedHash must be a string (or undefined for an unknown user)',
          'encodedHash',
        );
      }
      const verifier = ctx.passwordVerifier();
      const hash = encodedHash === '' ? undefined : encodedHash;
      // The password goes to the engine only for repeat-password forgiveness (as a keyed hash).
      return run(
        org,
        user,
        'password',
        () => verifier.verify(hash, password),
        { password, ...deviceOption(context) },
        context,
      );
    },

    async totp(org, user, secret, code, context) {
      requireString(secret, 'secret');
      requireString(code, 'code');
      return run(
        org,
        user,
        'totp',
        (subject) => ctx.totpVerifier.verify(subject, secret, code),
        deviceOption(context),
        context,
      );
    },

    async issueCode(org, user, rawChannel) {
      const channel = checkChannel(rawChannel);
      const subject = makeSubject(engine.instanceId, org, user);
      try {
        // A locked user's codes would be refused anyway: do not send one (cost, SMS pumping).
        const status = await engine.getUserStatus(subject.org, subject.user);
        if (status.locked) throw new UserLockedError(status.lockedAt);
        return await ctx.otpCodes.issue(subject, channel);
      } catch (error) {
        if (error instanceof StoreUnavailableError) {
          report(error, {
            operation: 'issue',
            outcome: 'refused',
            factor: FACTOR_OF_CHANNEL[channel],
            orgId: subject.org,
            userId: subject.user,
          });
        }
        throw error;
      }
    },

    async verifyCode(org, user, rawChannel, code, context) {
      const channel = checkChannel(rawChannel);
      requireString(code, 'code');
      return run(
        org,
        user,
        FACTOR_OF_CHANNEL[channel],
        (subject) => ctx.otpCodes.verify(subject, channel, code),
        deviceOption(context),
        context,
      );
    },

    async check(org, user, factor, verifier, context) {
      validateFactor(factor);
      if (typeof verifier !== 'function') {
        throw new InvalidArgumentError(
          'Errors.Options.Invalid',
          `verifier must be a function () => Promise<boolean> that answers whether the credential is right, got ${describe(verifier)}`,
          'verifier',
        );
      }
      return run(org, user, factor, () => verifier(), deviceOption(context), context);
    },
  };
}
