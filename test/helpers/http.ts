/** Helpers of the tests that call a server over HTTP (fetch). */

/** A fetch answer read whole: its status, text, body parsed as JSON (undefined when not JSON) and headers. */
export async function readAnswer(
  res: Response,
): Promise<{ status: number; text: string; body: unknown; headers: Headers }> {
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, text, body, headers: res.headers };
}
