/**
 * Two projects: `default` (every test under test/ except the browser tests, with the Redis
 * servers of global-setup) and `browser` (test/browser: the admin console in Chromium, driven by
 * playwright-core; no Redis). `npm test` runs both; `npx jest --selectProjects browser` runs the
 * browser tests alone, `--selectProjects default` the others.
 */
const transform = { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] };

/** @type {import('jest').Config} */
module.exports = {
  testTimeout: 30000,
  maxWorkers: 2,
  projects: [
    {
      displayName: 'default',
      testEnvironment: 'node',
      roots: ['<rootDir>/test'],
      testMatch: ['**/*.test.ts'],
      testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/browser/'],
      transform,
      globalSetup: '<rootDir>/test/helpers/global-setup.ts',
      globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
    },
    {
      displayName: 'browser',
      testEnvironment: 'node',
      roots: ['<rootDir>/test/browser'],
      testMatch: ['**/*.test.ts'],
      transform,
    },
  ],
};
