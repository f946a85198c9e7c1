/**
 * The composition root of the sidecar (`npm start`): the only place that reads process.env for it.
 * Everything else is runSidecar (run.ts), shared with `lockgate serve` (src/cli).
 */
import { runSidecar } from './run';

runSidecar(process.env).catch((error: unknown) => {
  process.stderr.write(`lockgate: cannot start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
