export * from './core/errors';
export * from './core/subjects';
export * from './core/settings';
export * from './core/engine';
export { encodeAttemptId, decodeAttemptId, type AttemptRef } from './core/attempt-id';
export { createActivity, type Activity, type ActivityMinute, type ActivityOptions } from './core/activity';
export { createConsoleHandler, type ConsoleOptions } from './console/console';
export { ipBlock } from './core/ip-block';
export {
  SprayThrottle,
  type SprayThrottleConfig,
  type SprayThrottleOptions,
  type ThrottleEvent,
  type ThrottleTicket,
} from './core/spray-throttle';
export * from './store';
export * from './express';
export * from './verify';
export {
  CREDENTIAL_FIELDS,
  EVENT_TYPES,
  RECORDED_EVENT_TYPES,
  renderEvent,
  toEventRecord,
  type DeadLetter,
  type EventLog,
  type EventPage,
  type EventQuery,
  type EventRecord,
  type RenderedEvent,
} from './core/events';
export * from './events';
export {
  InvalidCredentialsError,
  PermissionDeniedError,
  RequestError,
  UnauthenticatedError,
  createErrorHandler,
  createNotFoundHandler,
  toHttpError,
  type ErrorBody,
  type ErrorDetail,
  type ErrorHandlerOptions,
  type HttpError,
} from './http/errors';
export {
  ORG_HEADER,
  PERMISSIONS,
  createTokenAuthorizer,
  hashToken,
  type AuthContext,
  type AuthScope,
  type Authorize,
  type AuthorizeTarget,
  type Permission,
  type TokenAuthorizerOptions,
  type TokenOptions,
} from './http/auth';
export {
  DEFAULT_JWT_ALGORITHMS,
  JWT_ALGORITHMS,
  ZITADEL_RESOURCE_OWNER_CLAIM,
  ZITADEL_ROLES_CLAIM,
  combineAuthorizers,
  createJwtAuthorizer,
  looksLikeJwt,
  type ClaimOrFixed,
  type JwtAlgorithm,
  type JwtAuthorizerOptions,
  type JwtPermissionsOptions,
} from './http/jwt';
// Defences (issue 12): their option and setting types, and the device tokens' primitives.
export type {
  DefencesConfig,
  DefenceValues,
  DeviceCookiesValues,
  RepeatPasswordValues,
  TemporaryLockoutValues,
} from './core/defences';
export {
  issueDeviceToken,
  verifyDeviceToken,
  type DeviceKey,
  type DeviceTokenConfig,
} from './core/device-token';
export type { DefencesOptions } from './express/options';
