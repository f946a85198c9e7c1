/** The Express face: createLockout (guards, checks, routers) and the routers it wraps. */
export {
  createLockout,
  type Lockout,
  type LockoutGuards,
  type LockoutRouters,
  type LockoutRouterOptions,
} from './lockout';
export { outcomeOfStatus, type GuardOptions, type LockoutAttempt, type SubjectExtractor } from './guard';
export type { CheckContext, IssuedCode, LockoutCheckResult, LockoutChecks } from './checks';
export type {
  GuardRefusal,
  InstanceSettingsOptions,
  LockoutConfig,
  LockoutErrorContext,
  LockoutOptions,
  RefusalReason,
  RefusalResponse,
  StoreErrorPolicy,
} from './options';
export {
  createApiRouter,
  createChecksRouter,
  createSettingsRouter,
  createUsersRouter,
  type ApiRouterOptions,
  type AuditEntry,
  type ChecksRouterOptions,
  type ObservedCheckOutcome,
  type RouterBaseOptions,
  type SettingsRouterOptions,
  type UsersRouterOptions,
} from '../http/routers';
