/** Reverse-proxy mode: lockgate in front of an auth service that cannot change. */
export {
  compileTrust,
  parseProxyConfig,
  parseSize,
  proxyConfigSchema,
  SOURCES,
  type JudgeConfig,
  type LockedResponseConfig,
  type ProxyConfig,
  type ProxyConfigInput,
  type ProxyOrgSource,
  type ProxyRouteConfig,
  type ProxyValueSource,
  type Source,
  type StatusRange,
} from './config';
export {
  createProxy,
  HOP_BY_HOP_HEADERS,
  normalizePath,
  type LockgateProxy,
  type ProxyHandler,
  type ProxyLogger,
  type ProxyLoginEvent,
  type ProxyLoginOutcome,
  type ProxyOptions,
} from './proxy';
