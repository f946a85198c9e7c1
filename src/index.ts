export * from './core/errors';
export * from './core/subjects';
export * from './core/settings';
export * from './core/engine';
export { encodeAttemptId, decodeAttemptId, type AttemptRef } from './core/attempt-id';
export * from './store';
