/**
 * Forwarding headers: what the upstream is sent (from rawHeaders, hop-by-hop fields removed, an
 * untrusted peer's client-IP fields dropped, X-Forwarded-* set) and what the client is sent back.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { TLSSocket } from 'node:tls';
import typeis from 'type-is';

/**
 * Hop-by-hop fields (RFC 9110 7.6.1, and RFC 2616 13.5.1's Proxy-* fields): never forwarded, in
 * either direction, nor are the fields named in Connection. `expect` is answered by node:http
 * itself (100 Continue) and `host` is set separately.
 */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/**
 * Client-IP fields (lower case, `_` read as `-`): an untrusted peer's are dropped, whatever their
 * spelling, so that the upstream never believes an address the client chose.
 */
const CLIENT_IP_HEADERS: ReadonlySet<string> = new Set([
  'forwarded',
  'x-real-ip',
  'true-client-ip',
  'x-client-ip',
  'client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'fly-client-ip',
  'x-originating-ip',
  'x-remote-ip',
  'x-remote-addr',
  'x-proxyuser-ip',
  'x-envoy-external-address',
  'x-appengine-user-ip',
  'akamai-client-ip',
]);

/** Whether a header name (any case, `_` or `-`) carries a client address. */
export function isClientIpHeader(name: string): boolean {
  const n = name.toLowerCase().replace(/_/g, '-');
  return CLIENT_IP_HEADERS.has(n) || n.startsWith('x-forwarded-') || n.startsWith('x-original-forwarded-');
}

export interface ForwardingOptions {
  /** The compiled `trustProxy`: whether an address at a hop is a trusted proxy. */
  readonly trust: (address: string, hop: number) => boolean;
  /** Forward the client's Host (else the upstream's host is sent). */
  readonly preserveHost: boolean;
}

/** The headers sent upstream for a request, a flat [name, value, …] list; `skip`: fields set by the caller. */
export type UpstreamHeaders = (req: IncomingMessage, skip?: ReadonlySet<string>) => string[];

/**
 * The headers sent upstream, from rawHeaders so that repeated lines arrive as sent: hop-by-hop
 * fields, Host and Expect removed (Host set again per preserveHost), an untrusted peer's
 * client-IP fields dropped, X-Forwarded-For/Proto/Host set.
 */
export function createUpstreamHeaders({ trust, preserveHost }: ForwardingOptions): UpstreamHeaders {
  return (req, skip) => {
    const src = req.headers;
    const listed = connectionTokens(src.connection);
    const peer = peerAddress(req);
    const trusted = peer !== '' && trust(peer, 0);
    const out: string[] = [];
    const raw = req.rawHeaders;
    const priorFor: string[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      const lower = name.toLowerCase();
      if (HOP_BY_HOP_HEADERS.has(lower) || lower === 'host' || lower === 'expect') continue;
      if (listed !== undefined && listed.has(lower)) continue;
      if (skip !== undefined && skip.has(lower)) continue;
      if (lower === 'x-forwarded-for') {
        if (trusted) priorFor.push(value);
        continue;
      }
      // An untrusted peer's forwarding claims are dropped: the upstream must not believe them.
      if (!trusted && isClientIpHeader(lower)) continue;
      out.push(name, value);
    }
    const host = src.host;
    if (preserveHost && host !== undefined) out.push('host', host);
    const chain = [...priorFor, ...(peer !== '' ? [peer] : [])].join(', ');
    if (chain !== '') out.push('x-forwarded-for', chain);
    if (!(trusted && src['x-forwarded-proto'])) {
      out.push('x-forwarded-proto', (req.socket as TLSSocket).encrypted ? 'https' : 'http');
    }
    if (!(trusted && src['x-forwarded-host']) && host !== undefined) out.push('x-forwarded-host', host);
    return out;
  };
}

/** The upstream's response headers without hop-by-hop fields. */
export function downstreamHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = connectionTokens(headers.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP_HEADERS.has(name) || (listed !== undefined && listed.has(name))) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** The lower-case field names listed in Connection, or undefined. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const set = new Set<string>();
  for (const part of Array.isArray(value) ? value : [value]) {
    for (const token of part.split(',')) {
      const t = token.trim().toLowerCase();
      if (t) set.add(t);
    }
  }
  return set;
}

function peerAddress(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** Whether the request has a body (Transfer-Encoding or Content-Length, even 0): type-is's hasBody. */
export const hasBody: (req: IncomingMessage) => boolean = typeis.hasBody;
