/** Credential verifiers: argon2 passwords, RFC 6238 TOTP and issued SMS/Email codes. */
export { RateLimitedError, VerifyErrorCodes } from './errors';
export {
  createPasswordVerifier,
  hashPassword,
  DEFAULT_ARGON2_COST,
  MAX_PASSWORD_LENGTH,
  type Argon2Cost,
  type PasswordVerifier,
  type PasswordVerifierOptions,
} from './password';
export {
  createTotpVerifier,
  generateTotpSecret,
  totpCode,
  DEFAULT_MIN_TOTP_SECRET_BYTES,
  type TotpVerifier,
  type TotpVerifierOptions,
} from './totp';
export {
  createOtpCodes,
  CODE_CHANNELS,
  DEFAULT_CODE_TTL_MS,
  type OtpCodes,
  type OtpCodesOptions,
} from './otp-codes';
export {
  createIssueLimiter,
  type IssueLimiter,
  type IssueLimiterOptions,
  type IssueLimiterRedisClient,
} from './issue-limiter';
