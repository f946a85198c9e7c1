/**
 * An Express app with lockgate's API router on a MemoryStore, for the api-*.test.ts suites:
 * the tokens differ per suite, the rest is the same unless a suite overrides router options.
 */
import express from 'express';
import { LockoutEngine } from '../../src/core/engine';
import { createApiRouter, type ApiRouterOptions, type AuditEntry } from '../../src/http/routers';
import { createNotFoundHandler, createTokenAuthorizer, type TokenOptions } from '../../src/http';
import { MemoryStore } from '../../src/store';
import {
  createIssueLimiter,
  createOtpCodes,
  createPasswordVerifier,
  createTotpVerifier,
} from '../../src/verify';

/** RFC 3339 UTC with milliseconds, as lockgate renders dates. */
export const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export const auth = (token: string) => ({ Authorization: `Bearer ${token}` });

/** A cheap argon2 cost for tests. */
export const TEST_ARGON2 = { memoryCost: 4096, timeCost: 2, parallelism: 1 };

export function makeApiApp(
  instanceId: string,
  tokens: TokenOptions[],
  overrides: (store: MemoryStore, engine: LockoutEngine) => Partial<ApiRouterOptions> = () => ({}),
) {
  const store = new MemoryStore();
  const engine = new LockoutEngine({ store, instanceId });
  const audit: AuditEntry[] = [];
  const app = express();
  app.use(
    createApiRouter({
      engine,
      authorize: createTokenAuthorizer({ tokens }),
      passwordVerifier: createPasswordVerifier(TEST_ARGON2),
      totpVerifier: createTotpVerifier({ store }),
      otpCodes: createOtpCodes({ store, limiter: createIssueLimiter({ points: 100 }) }),
      audit: (e) => audit.push(e),
      ...overrides(store, engine),
    }),
  );
  app.use(createNotFoundHandler());
  return { app, store, engine, audit };
}
