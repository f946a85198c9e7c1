import { GrpcCode, LockgateError } from '../core/errors';

/**
 * Stable error codes raised by the verifiers (documented in README). Bad input is an
 * InvalidArgumentError (from core/errors) with one of these codes and the offending field.
 */
export const VerifyErrorCodes = {
  /** `encodedHash` is not an argon2i/argon2id PHC string, or its parameters are out of bounds. */
  PasswordHashInvalid: 'Errors.Password.HashInvalid',
  /** `password` is not a string. */
  PasswordInvalid: 'Errors.Password.Invalid',
  /** `password` is longer than the verifier accepts (1024 characters by default). */
  PasswordTooLong: 'Errors.Password.TooLong',
  /** The TOTP `secret` is missing, not Base32, or decodes to too few or too many bytes. */
  TotpSecretInvalid: 'Errors.Totp.SecretInvalid',
  /** The one-time code channel is not `sms` or `email`. */
  OtpChannelInvalid: 'Errors.Otp.ChannelInvalid',
  /** Too many codes were issued to this user (and channel) in the current window. */
  OtpTooManyCodes: 'Errors.Otp.TooManyCodes',
  /** A verifier option is invalid (named in the message and `field`). */
  OptionInvalid: 'Errors.Verify.OptionInvalid',
} as const;

/**
 * Too many one-time codes were issued for this user: the code was not issued. The faces answer
 * 429 (gRPC ResourceExhausted) with a `Retry-After` of `retryAfterMs`.
 */
export class RateLimitedError extends LockgateError {
  readonly grpcCode = GrpcCode.ResourceExhausted;
  readonly httpStatus = 429;
  readonly code = VerifyErrorCodes.OtpTooManyCodes;
  constructor(
    /** Milliseconds until a code may be issued again. */
    override readonly retryAfterMs: number,
    options?: { cause?: unknown },
  ) {
    super('Too many codes issued, retry later', options);
  }
}
