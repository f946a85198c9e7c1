/**
 * The HTTP layer shared by the middleware and the sidecar: the HTTP API (routers.ts: every route
 * and handler; schemas.ts: request and response bodies in zod, from which the OpenAPI schemas are
 * generated), error mapping, auth, renderers. The routers are exported by the Express face.
 */
export * from './errors';
export * from './auth';
export * from './jwt';
export * from './render';
