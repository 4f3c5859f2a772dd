// express-notifications: an Express backend that notifies the users of wsfan
// by publishing straight into wsfan's Redis (docs/protocol.md section 6).
// wsfan runs with --redis on the same Redis and --auth jwt with the same secret.
//
// Settings (run.sh sets them):
//   WSFAN_JWT_SECRET  the HS256 secret shared with wsfan (required)
//   REDIS_URL         wsfan's --redis (default redis://127.0.0.1:6379)
//   WSFAN_NAMESPACE   wsfan's --namespace (default wsfan)
//   APP_WSFAN_WS_URL  wsfan's /ws as clients reach it (default ws://127.0.0.1:8080/ws)
//   APP_PORT          this server's port on 127.0.0.1 (default 3000)
import crypto from 'node:crypto';
import express from 'express';
import { createClient } from 'redis';

const env = process.env;
const JWT_SECRET = env.WSFAN_JWT_SECRET;
if (!JWT_SECRET) throw new Error('express-notifications: set WSFAN_JWT_SECRET (see README.md)');
const NAMESPACE = env.WSFAN_NAMESPACE || 'wsfan';
const WS_URL = env.APP_WSFAN_WS_URL || 'ws://127.0.0.1:8080/ws';
const TOKEN_TTL = 900; // seconds: tokens live minutes (docs/security.md)
const ID = /^[A-Za-z0-9_.:-]{1,128}$/; // user ids (docs/protocol.md section 4)

// DEMO ONLY: the caller names itself in X-Demo-User. A real app checks its
// session or its own token here.
const DEMO_USERS = new Set(['alice', 'bob', 'carol']);
function demoAuth(req, res, next) {
  const user = req.get('X-Demo-User');
  if (!DEMO_USERS.has(user)) return res.status(401).json({ error: 'X-Demo-User must be alice, bob or carol' });
  req.user = user;
  next();
}

// An HS256 JWT with node:crypto (docs/protocol.md section 1a).
const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
function signToken(claims) {
  const unsigned = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${unsigned}.${crypto.createHmac('sha256', JWT_SECRET).update(unsigned).digest('base64url')}`;
}

const redis = createClient({ url: env.REDIS_URL || 'redis://127.0.0.1:6379' });
redis.on('error', (err) => console.error('redis:', err.message));
await redis.connect();

// One PUBLISH per user on NS:user:{USER}: {"data":..} is all the envelope a
// service needs. Every connection of the user, on every wsfan node, gets a
// `direct` event with "from": null. PUBLISH answers how many subscribers got
// it: the wsfan nodes with a connection of that user now (0: offline, and the
// message is gone; user messages are not stored).
async function notifyUsers(users, data) {
  const payload = JSON.stringify({ data });
  const nodes = await Promise.all(users.map((u) => redis.publish(`${NAMESPACE}:user:{${u}}`, payload)));
  return Object.fromEntries(users.map((u, i) => [u, nodes[i]]));
}

const app = express();
app.use(express.json({ limit: '64kb' }));

app.get('/healthz', async (req, res) => {
  res.status((await redis.ping().catch(() => null)) === 'PONG' ? 200 : 503).send();
});

// The caller's wsfan token: it may connect and receive its direct events; no
// rooms, no publishing (add "rooms", "publish" claims for a chat).
app.get('/token', demoAuth, (req, res) => {
  const exp = Math.floor(Date.now() / 1000) + TOKEN_TTL;
  res.json({ token: signToken({ sub: req.user, exp }), exp, url: WS_URL });
});

// {"to": ["bob", ..], "text": ".."} -> {"nodes": {"bob": 1, ..}}
// (Express 5 passes a rejected promise, such as Redis down, to the error handler.)
app.post('/notify', demoAuth, async (req, res) => {
  const { to, text } = req.body ?? {};
  if (!Array.isArray(to) || to.length < 1 || to.length > 1000 || !to.every((u) => typeof u === 'string' && ID.test(u))) {
    return res.status(400).json({ error: 'to must be 1 to 1000 user ids' });
  }
  if (typeof text !== 'string' || !text) return res.status(400).json({ error: 'text must be a string' });
  res.json({ nodes: await notifyUsers([...new Set(to)], { kind: 'notification', by: req.user, text }) });
});

// Errors as JSON: a bad body is 400, Redis down 500.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  if (!err.status) console.error(err);
  res.status(err.status || 500).json({ error: err.expose ? err.message : 'internal error' });
});

const server = app.listen(Number(env.APP_PORT || 3000), '127.0.0.1', () => {
  console.log(`express-notifications on http://127.0.0.1:${server.address().port}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => redis.close()));
}
