/**
 * Running the sidecar as a process: configuration from the environment, the generated admin
 * token of the quick start, start-up errors as one line, and signals. Shared by `npm start`
 * (main.ts) and the `lockgate serve` command (src/cli).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  adminToken,
  ConfigError,
  loadConfig,
  type Env,
  type SidecarConfig,
  type SidecarToken,
} from './config';
import { createLogger } from './logger';
import { startSidecar, type SidecarHandle } from './server';

/**
 * Runs the sidecar until SIGTERM/SIGINT: loads the configuration from `env` (exit 1 with one line
 * on stderr when it is bad), makes an admin token when none is configured (printed once), starts
 * the server and stops it on the first signal (exit 0; a second signal exits 1 at once).
 * On SIGHUP it loads the configuration again and applies its `auth` section (tokens, jwt); a bad
 * one is logged as one line at error level and the previous auth stays in effect.
 * Resolves once the server listens. Used by `npm start` (main.ts) and `lockgate serve`.
 */
export async function runSidecar(env: Env): Promise<void> {
  const readFile = (file: string): string => readFileSync(file, 'utf8');
  let config: SidecarConfig;
  try {
    config = loadConfig(env, readFile);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }

  let generated: SidecarToken | undefined;
  if (config.auth.tokens.length === 0 && config.auth.jwt === undefined) {
    // Quick start: an admin token for this run only, shown once and never logged. Not with
    // auth.jwt: that configuration has chosen how callers authenticate.
    const token = randomBytes(32).toString('base64url');
    generated = adminToken(token, config.instance.id);
    config = { ...config, auth: { ...config.auth, tokens: [generated] } };
    process.stdout.write(
      `lockgate: no token configured; generated admin token for this run (shown once): ${token}\n` +
        `lockgate: set LOCKGATE_ADMIN_TOKEN or auth.tokens in LOCKGATE_CONFIG to choose your own\n`,
    );
  }

  const logger = createLogger(config.log.level);
  let sidecar: SidecarHandle;
  try {
    sidecar = await startSidecar(config, { logger });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException)?.code;
    const where = `${config.server.host}:${config.server.port}`;
    const reason =
      code === 'EADDRINUSE'
        ? `cannot listen on ${where}: address already in use`
        : code === 'EACCES'
          ? `cannot listen on ${where}: permission denied`
          : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND'
            ? `cannot listen on ${where}: address not available`
            : `cannot start: ${error instanceof Error ? error.message : String(error)}`;
    process.stderr.write(`lockgate: ${reason}\n`);
    process.exit(1);
  }

  logger.info(
    {
      url: sidecar.url,
      store: config.store.type,
      instanceId: config.instance.id,
      onStoreError: config.onStoreError,
      tokens: config.auth.tokens.map((t) => t.name),
      ...(sidecar.consoleUrl ? { console: sidecar.consoleUrl } : {}),
      ...(config.proxy
        ? {
            proxyUpstream: config.proxy.upstream,
            proxyRoutes: config.proxy.routes.length,
            ...(sidecar.proxyUrl ? { proxyUrl: sidecar.proxyUrl } : {}),
          }
        : {}),
    },
    `lockgate listening on ${sidecar.url}`,
  );

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'signal received');
    sidecar.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  // SIGHUP: the same loading path as at start (default.yaml, LOCKGATE_CONFIG, the environment),
  // of which only `auth` is applied. Never throws: a bad reload keeps the previous auth.
  const reload = (): void => {
    if (stopping) return;
    try {
      let next = loadConfig(env, readFile);
      // The token generated at start stays while the configuration still names none.
      if (generated && next.auth.tokens.length === 0) {
        next = { ...next, auth: { ...next.auth, tokens: [generated] } };
      }
      sidecar.reloadAuth(next);
      logger.info(
        { tokens: next.auth.tokens.map((t) => t.name), jwt: next.auth.jwt !== undefined },
        'configuration reloaded: auth',
      );
    } catch (error) {
      const message = (error instanceof Error ? error.message : String(error)).split('\n')[0];
      logger.error(
        { reload: 'failed', ...(error instanceof ConfigError && error.field ? { field: error.field } : {}) },
        `configuration not reloaded, the previous one stays in effect: ${message}`,
      );
    }
  };
  process.on('SIGHUP', reload);
}
