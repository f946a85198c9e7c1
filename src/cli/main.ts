#!/usr/bin/env node
/**
 * The `lockgate` executable (package.json "bin"): runCli on the real process. Commands other than
 * `serve` exit once their output is written; `serve` runs until SIGTERM/SIGINT.
 */
import { runCli } from './cli';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => (text += chunk));
    process.stdin.once('end', () => resolve(text));
    process.stdin.once('error', reject);
  });
}

function exit(code: number): void {
  // Exit once what was written has been flushed (stdout may be an asynchronous pipe).
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

runCli(process.argv.slice(2), {
  env: process.env,
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  readStdin,
}).then(
  (code) => {
    if (code !== 'serving') exit(code);
  },
  (error: unknown) => {
    process.stderr.write(
      `lockgate: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    exit(1);
  },
);
