import type { IncomingMessage } from 'node:http';
import proxyAddr from 'proxy-addr';

/** Whether an address at a hop (0 = the connection's peer) is a trusted proxy: Express's compiled "trust proxy". */
export type TrustProxy = (address: string, hop: number) => boolean;

const TRUST_NONE: TrustProxy = () => false;

/**
 * The client address of a request, as every face reads it: the nearest address in the
 * X-Forwarded-For chain that `trust` does not trust (proxy-addr, which is what Express's `req.ip`
 * is). `trust` omitted: the Express app's own "trust proxy" setting when the request went through
 * Express (the middleware, the sidecar's routes), else no proxy is trusted (the socket's peer).
 * The reverse proxy passes its own `trustProxy` (the one it applies to X-Forwarded-For). Undefined
 * when the socket has no address (it closed).
 */
export function clientIp(req: IncomingMessage, trust?: TrustProxy): string | undefined {
  if (req.socket?.remoteAddress === undefined) return undefined;
  const appTrust = (req as { app?: { get?: (name: string) => unknown } }).app?.get?.('trust proxy fn');
  const fn = trust ?? (typeof appTrust === 'function' ? (appTrust as TrustProxy) : TRUST_NONE);
  return proxyAddr(req, fn);
}
