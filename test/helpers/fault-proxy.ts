/**
 * A fault-injection TCP proxy for tests: it sits between ioredis and a real `redis-server` and,
 * under control of the test at run time, delays traffic per direction, black-holes it, drops the
 * replies of commands it forwarded, resets connections, refuses new ones, and splits writes into
 * small chunks. `heal()` ends every fault.
 *
 * The faults keep to what TCP can do: bytes of one connection are delivered in order or the
 * connection dies. So a dropped reply is not a silent gap in a live stream (ioredis would then
 * match later replies to the wrong commands, which no network does): the connection that lost
 * bytes is reset when the drop window ends, and ioredis reconnects and, by default
 * (`autoResendUnfulfilledCommands`), sends the unanswered commands again. A black hole buffers
 * what it swallows: after `heal()` the buffered bytes are delivered late (a healed partition),
 * after `reset()` they are lost with their connection.
 *
 * For a Redis Cluster run one proxy per node (see {@link startClusterProxies}); ioredis's
 * Cluster option `natMap` maps each node's announced `host:port` (CLUSTER SLOTS, MOVED, ASK) to
 * its proxy, so every connection of the client goes through a proxy.
 */
import net from 'node:net';

/** `up`: client → server (commands); `down`: server → client (replies). */
export type Direction = 'up' | 'down';

export interface ProxyTarget {
  host: string;
  port: number;
}

/** Counters of one proxy since it started (or since `resetStats()`). */
export interface FaultProxyStats {
  /** Client connections accepted. */
  accepted: number;
  /** Client connections open now. */
  open: number;
  /** Bytes delivered to the server / to the client. */
  bytesUp: number;
  bytesDown: number;
  /** Bytes held back now (delay or black hole), both directions. */
  bytesHeld: number;
  /** Reply bytes discarded by `dropReplies`. */
  bytesDropped: number;
  /** Connections this proxy destroyed (reset, refuse, end of a drop window). */
  resets: number;
  /** Socket writes made (a split write makes many). */
  writes: number;
}

interface Chunk {
  data: Buffer;
  releaseAt: number;
}

interface Pipe {
  readonly to: net.Socket;
  readonly queue: Chunk[];
  busy: boolean;
  timer?: NodeJS.Timeout;
}

interface Link {
  readonly client: net.Socket;
  readonly server: net.Socket;
  readonly up: Pipe;
  readonly down: Pipe;
  /** Lost reply bytes: this connection is reset when the drop window ends. */
  tainted: boolean;
  closed: boolean;
}

export class FaultProxy {
  readonly host = '127.0.0.1';
  private readonly server: net.Server;
  private readonly links = new Set<Link>();
  private readonly delays: Record<Direction, number> = { up: 0, down: 0 };
  private holding = false;
  private refusing = false;
  private dropUntil = 0;
  private dropTimer?: NodeJS.Timeout;
  private chunkBytes = 0;
  private counters = { accepted: 0, bytesUp: 0, bytesDown: 0, bytesDropped: 0, resets: 0, writes: 0 };
  private listening = false;

  private constructor(readonly target: ProxyTarget) {
    this.server = net.createServer((client) => this.accept(client));
  }

  /** Starts a proxy to `target` on a free port of 127.0.0.1. */
  static async start(target: ProxyTarget): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(0, proxy.host, () => {
        proxy.server.off('error', reject);
        resolve();
      });
    });
    proxy.listening = true;
    return proxy;
  }

  /** The proxy's own port (connect the client here). */
  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('FaultProxy is not listening');
    return address.port;
  }

  /** `{ host, port }` of the proxy. */
  get address(): ProxyTarget {
    return { host: this.host, port: this.port };
  }

  /** `redis://127.0.0.1:PORT` of the proxy. */
  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  /** Holds every byte of `direction` (or both) for `ms` before delivering it (0 = no delay). Order is kept. */
  delay(direction: Direction | 'both', ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError('delay must be a non-negative number of ms');
    if (direction !== 'down') this.delays.up = ms;
    if (direction !== 'up') this.delays.down = ms;
  }

  /** Accepts connections and data but forwards nothing, in either direction, until `heal()` or `reset()`. */
  blackHole(): void {
    this.holding = true;
  }

  /**
   * For the next `ms`: commands are forwarded, but every reply byte from the server is discarded.
   * When the window ends (or at `heal()`), each connection that lost bytes is reset.
   */
  dropReplies(ms: number): void {
    if (!Number.isFinite(ms) || ms <= 0) throw new RangeError('dropReplies needs a positive window in ms');
    this.dropUntil = Math.max(this.dropUntil, Date.now() + ms);
    clearTimeout(this.dropTimer);
    this.dropTimer = setTimeout(() => this.endDrop(), this.dropUntil - Date.now());
  }

  /** Destroys every open connection now (client and server side); held bytes are lost. */
  reset(): void {
    for (const link of [...this.links]) this.destroy(link, true);
  }

  /** While on, a new connection is accepted and destroyed at once (a server that restarts). */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /** Writes every forwarded byte in pieces of at most `bytes`, one piece per event-loop turn (0 = whole). */
  split(bytes: number): void {
    if (!Number.isInteger(bytes) || bytes < 0) throw new RangeError('split needs a non-negative integer');
    this.chunkBytes = bytes;
  }

  /**
   * Ends every fault: no delay, no black hole (held bytes are delivered now, in order), no drop
   * window (connections that lost reply bytes are reset), no refusal, no splitting.
   */
  heal(): void {
    this.delays.up = 0;
    this.delays.down = 0;
    this.refusing = false;
    this.chunkBytes = 0;
    this.endDrop();
    this.holding = false;
    for (const link of this.links) {
      for (const chunk of link.up.queue) chunk.releaseAt = 0;
      for (const chunk of link.down.queue) chunk.releaseAt = 0;
      this.pump(link, link.up);
      this.pump(link, link.down);
    }
  }

  stats(): FaultProxyStats {
    let bytesHeld = 0;
    for (const link of this.links) {
      for (const chunk of [...link.up.queue, ...link.down.queue]) bytesHeld += chunk.data.length;
    }
    return { ...this.counters, open: this.links.size, bytesHeld };
  }

  resetStats(): void {
    this.counters = { accepted: 0, bytesUp: 0, bytesDown: 0, bytesDropped: 0, resets: 0, writes: 0 };
  }

  /** Stops listening and destroys every connection. Idempotent. */
  async close(): Promise<void> {
    clearTimeout(this.dropTimer);
    for (const link of [...this.links]) this.destroy(link, false);
    if (!this.listening) return;
    this.listening = false;
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // -------------------------------------------------------------------------------------------

  private accept(client: net.Socket): void {
    this.counters.accepted += 1;
    client.setNoDelay(true);
    if (this.refusing) {
      this.counters.resets += 1;
      client.on('error', () => undefined);
      client.destroy();
      return;
    }
    const server = net.connect({ host: this.target.host, port: this.target.port });
    server.setNoDelay(true);
    const link: Link = {
      client,
      server,
      up: { to: server, queue: [], busy: false },
      down: { to: client, queue: [], busy: false },
      tainted: false,
      closed: false,
    };
    this.links.add(link);
    client.on('data', (data: Buffer) => this.receive(link, 'up', data));
    server.on('data', (data: Buffer) => this.receive(link, 'down', data));
    // Either side ends or fails: the other goes too (a proxy has no half-open connections).
    for (const socket of [client, server]) {
      socket.on('error', () => this.destroy(link, false));
      socket.on('close', () => this.destroy(link, false));
      socket.on('end', () => this.destroy(link, false));
    }
  }

  private receive(link: Link, direction: Direction, data: Buffer): void {
    if (link.closed) return;
    if (direction === 'down' && Date.now() < this.dropUntil) {
      this.counters.bytesDropped += data.length;
      link.tainted = true;
      return;
    }
    const pipe = direction === 'up' ? link.up : link.down;
    pipe.queue.push({ data, releaseAt: Date.now() + this.delays[direction] });
    this.pump(link, pipe);
  }

  /** Delivers the queue of `pipe` in order, honouring delay, black hole and splitting. */
  private pump(link: Link, pipe: Pipe): void {
    if (pipe.busy || link.closed || this.holding) return;
    const head = pipe.queue[0];
    if (!head) return;
    const wait = head.releaseAt - Date.now();
    if (wait > 0) {
      if (!pipe.timer) {
        pipe.timer = setTimeout(() => {
          pipe.timer = undefined;
          this.pump(link, pipe);
        }, wait);
      }
      return;
    }
    pipe.queue.shift();
    const direction: Direction = pipe === link.up ? 'up' : 'down';
    if (this.chunkBytes === 0 || head.data.length <= this.chunkBytes) {
      this.write(link, pipe, direction, head.data);
      this.pump(link, pipe);
      return;
    }
    // Split: one piece per turn of the event loop, so that the peer reads them separately.
    pipe.busy = true;
    const size = this.chunkBytes;
    let offset = 0;
    const next = (): void => {
      if (link.closed) return;
      const piece = head.data.subarray(offset, offset + size);
      offset += piece.length;
      this.write(link, pipe, direction, piece);
      if (offset < head.data.length) {
        setImmediate(next);
        return;
      }
      pipe.busy = false;
      this.pump(link, pipe);
    };
    next();
  }

  private write(link: Link, pipe: Pipe, direction: Direction, data: Buffer): void {
    if (link.closed || pipe.to.destroyed) return;
    this.counters.writes += 1;
    if (direction === 'up') this.counters.bytesUp += data.length;
    else this.counters.bytesDown += data.length;
    pipe.to.write(data);
  }

  private endDrop(): void {
    clearTimeout(this.dropTimer);
    this.dropTimer = undefined;
    this.dropUntil = 0;
    for (const link of [...this.links]) if (link.tainted) this.destroy(link, true);
  }

  private destroy(link: Link, byFault: boolean): void {
    if (link.closed) return;
    link.closed = true;
    if (byFault) this.counters.resets += 1;
    clearTimeout(link.up.timer);
    clearTimeout(link.down.timer);
    link.up.queue.length = 0;
    link.down.queue.length = 0;
    this.links.delete(link);
    link.client.destroy();
    link.server.destroy();
  }
}

/** One proxy per cluster node, and the `natMap` that sends ioredis through them. */
export interface ClusterProxies {
  readonly proxies: FaultProxy[];
  /** Startup nodes for `new Cluster(nodes, …)`: the proxies' addresses. */
  readonly nodes: ProxyTarget[];
  /** ioredis Cluster `natMap`: each node's announced `host:port` → its proxy. */
  readonly natMap: Record<string, ProxyTarget>;
  /** Calls `heal()` on every proxy. */
  healAll(): void;
  closeAll(): Promise<void>;
}

/** Starts one {@link FaultProxy} per node of a cluster (nodes as the cluster announces them). */
export async function startClusterProxies(nodes: readonly ProxyTarget[]): Promise<ClusterProxies> {
  const proxies = await Promise.all(nodes.map((node) => FaultProxy.start(node)));
  const natMap: Record<string, ProxyTarget> = {};
  proxies.forEach((proxy, i) => {
    const node = nodes[i] as ProxyTarget;
    natMap[`${node.host}:${node.port}`] = proxy.address;
  });
  return {
    proxies,
    nodes: proxies.map((p) => p.address),
    natMap,
    healAll: () => proxies.forEach((p) => p.heal()),
    closeAll: async () => {
      await Promise.all(proxies.map((p) => p.close()));
    },
  };
}
