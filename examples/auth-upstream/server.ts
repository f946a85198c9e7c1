/**
 * A tiny stand-in for an auth service that cannot change, for trying lockgate's reverse-proxy
 * mode (README, "Reverse proxy"). It knows one user, alice / correct-horse-battery, answers
 * POST /login with 200 or 401, and GET /hello with a greeting. It has no lockout of its own.
 */
import http from 'node:http';

const port = Number(process.env.PORT ?? 3000);
const host = process.env.HOST ?? '127.0.0.1';

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'POST' && req.url === '/login') {
      let body: { username?: unknown; password?: unknown } = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
      } catch {
        return reply(400, { error: 'bad_request' });
      }
      const ok = body.username === 'alice' && body.password === 'correct-horse-battery';
      console.log(`upstream: login of ${String(body.username)}: ${ok ? 'ok' : 'wrong password'}`);
      return ok ? reply(200, { session: 'session-of-alice' }) : reply(401, { error: 'invalid_credentials' });
    }
    if (req.method === 'GET' && req.url?.startsWith('/hello'))
      return reply(200, { hello: 'from the upstream' });
    reply(404, { error: 'not_found' });
  });
});

server.listen(port, host, () => console.log(`auth-upstream listening on http://${host}:${port}`));
