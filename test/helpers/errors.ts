/** Helpers of the tests that assert errors. */

/** The error `make` throws; a test failure when it throws nothing. */
export function thrown(make: () => unknown): unknown {
  try {
    make();
  } catch (error) {
    return error;
  }
  throw new Error('nothing was thrown');
}
