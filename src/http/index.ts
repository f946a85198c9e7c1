/** The HTTP layer shared by the routers and the sidecar: error mapping, auth, renderers. */
export * from './errors';
export * from './auth';
export * from './render';
