// client.test.mjs - clients/js/wsfan.js against a real wsfan: commands and
// their replies, events, errors, reconnect after a network drop with
// nothing persisted lost, a server restart in the middle of traffic (the
// memory store forgets history: the client must say recovered:false), and
// a node restart with two nodes on one Redis (history survives: exact).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { backoffDelay, connect, WsfanError } from '../../clients/js/wsfan.js';
import { BIN, Proxy, Redis, Server, sleep, waitFor } from './server.mjs';

const clients = [];

function client(url, options = {}) {
  const c = connect(url, { WebSocket, backoffMin: 50, backoffMax: 400, timeout: 5000, ...options });
  clients.push(c);
  return c;
}

/** Collects the "roomMessage" events of c. */
function inbox(c) {
  const got = [];
  c.on('roomMessage', (m) => got.push(m));
  return got;
}

function closeAll() {
  while (clients.length) clients.pop().close();
}

describe('commands and events', () => {
  const server = new Server();
  before(() => server.start());
  after(async () => {
    closeAll();
    assert.equal(await server.stop(), 0, server.log);
  });

  test('connects, says welcome and answers ping', async () => {
    const c = client(server.url, { user: 'alice' });
    const { welcome, reconnect } = await c.once('connected');
    assert.equal(welcome.user, 'alice');
    assert.equal(reconnect, false);
    assert.equal(c.state, 'open');
    assert.equal((await c.ping()).type, 'pong');
  });

  test('join, publish, message event, history and presence', async () => {
    const a = client(server.url, { user: 'ann' });
    const b = client(server.url, { user: 'bob' });
    const got = inbox(b);
    const presence = [];
    b.on('presence', (p) => presence.push(p));
    await b.join('js-room');
    const joined = await a.join('js-room');
    assert.equal(joined.recovered, false);
    assert.match(joined.offset, /^\d+-\d+$/);
    const ack = await a.publish('js-room', { text: 'hello' });
    assert.match(ack.offset, /^\d+-\d+$/);
    await waitFor(() => got.length === 1, 3000, 'bob to get the message');
    assert.deepEqual(
      { room: got[0].room, from: got[0].from, data: got[0].data, offset: got[0].offset },
      { room: 'js-room', from: 'ann', data: { text: 'hello' }, offset: ack.offset },
    );
    await waitFor(() => presence.some((p) => p.type === 'presence_join' && p.user === 'ann'), 3000, 'presence_join');
    const history = await a.history('js-room', { limit: 10 });
    assert.deepEqual(history.map((m) => m.data), [{ text: 'hello' }]);
    const users = await a.presence('js-room');
    assert.deepEqual(users.map((u) => u.user).sort(), ['ann', 'bob']);
    const eph = await a.publish('js-room', { typing: true }, { ephemeral: true });
    assert.equal(eph.offset, null);
    await a.leave('js-room');
    await waitFor(() => presence.some((p) => p.type === 'presence_leave' && p.user === 'ann'), 3000, 'presence_leave');
  });

  test('direct messages reach every connection of a user', async () => {
    const a = client(server.url, { user: 'carl' });
    const b1 = client(server.url, { user: 'dora' });
    const b2 = client(server.url, { user: 'dora' });
    const got = [];
    b1.on('directMessage', (d) => got.push(d));
    b2.on('directMessage', (d) => got.push(d));
    await Promise.all([a.once('connected'), b1.once('connected'), b2.once('connected')]);
    await a.send('dora', 'psst');
    await waitFor(() => got.length === 2, 3000, 'both connections of dora');
    assert.ok(got.every((d) => d.from === 'carl' && d.data === 'psst'));
  });

  test('refused commands reject with the protocol error code', async () => {
    const c = client(server.url);
    await assert.rejects(c.join('bad room!'), (err) => err instanceof WsfanError && err.code === 'room_invalid');
    assert.equal(c.rooms.has('bad room!'), false, 'a refused join is not retried');
    await assert.rejects(c.publish('never-joined', 1), (err) => err.code === 'not_member');
    await assert.rejects(c.history('never-joined'), (err) => err.code === 'not_member');
  });

  test('a join with since replays what was missed', async () => {
    const a = client(server.url, { user: 'eve' });
    await a.join('replay-room');
    const first = await a.publish('replay-room', 1);
    await a.publish('replay-room', 2);
    await a.publish('replay-room', 3);
    const b = client(server.url);
    const got = inbox(b);
    const joined = await b.join('replay-room', { since: first.offset });
    assert.equal(joined.recovered, true);
    assert.equal(joined.missed, 2);
    await waitFor(() => got.length === 2, 3000, 'the replay');
    assert.deepEqual(got.map((m) => m.data), [2, 3]);
  });
});

describe('reconnecting', () => {
  const server = new Server();
  let proxy;
  before(async () => {
    await server.start();
    proxy = await new Proxy(server.port).start();
  });
  after(async () => {
    closeAll();
    await proxy.close();
    assert.equal(await server.stop(), 0, server.log);
  });

  test('backoff grows exponentially with jitter, up to the cap', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const step = Math.min(10000, 250 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, 250, 10000, () => 0), step / 2);
      assert.equal(backoffDelay(attempt, 250, 10000, () => 1), step);
      const d = backoffDelay(attempt, 250, 10000);
      assert.ok(d >= step / 2 && d <= step, `attempt ${attempt}: ${d}`);
    }
  });

  test('a dropped connection rejoins with since and loses nothing persisted', async () => {
    const c = client(proxy.url, { user: 'frank' });
    const got = inbox(c);
    await c.join('drop-room');
    for (let i = 1; i <= 5; i++) await server.publish({ room: 'drop-room', data: i });
    await waitFor(() => got.length === 5, 3000, 'the first five');

    const closed = c.once('disconnected');
    proxy.cut();
    assert.equal((await closed).willReconnect, true);
    for (let i = 6; i <= 15; i++) await server.publish({ room: 'drop-room', data: i });
    const rejoined = c.once('rejoined');
    proxy.resume();
    const r = await rejoined;
    assert.deepEqual({ room: r.room, recovered: r.recovered, missed: r.missed }, { room: 'drop-room', recovered: true, missed: 10 });
    for (let i = 16; i <= 20; i++) await server.publish({ room: 'drop-room', data: i });
    await waitFor(() => got.length >= 20, 5000, 'all twenty messages');
    await sleep(100);
    assert.deepEqual(got.map((m) => m.data), Array.from({ length: 20 }, (_, i) => i + 1));
  });

  test('commands issued while disconnected go out after the reconnect', async () => {
    const c = client(proxy.url, { user: 'gina' });
    await c.join('queue-room');
    const closed = c.once('disconnected');
    proxy.cut();
    await closed;
    const ack = c.publish('queue-room', 'sent while away');
    await sleep(200);
    proxy.resume();
    assert.match((await ack).offset, /^\d+-\d+$/);
    const history = await c.history('queue-room');
    assert.deepEqual(history.map((m) => m.data), ['sent while away']);
  });

  test('a command without a connection times out', async () => {
    const c = client(proxy.url, { timeout: 300 });
    await c.once('connected');
    proxy.cut();
    await c.once('disconnected');
    await assert.rejects(c.ping(), (err) => err.code === 'timeout');
    proxy.resume();
    await c.once('connected');
  });
});

describe('server restart in the middle of traffic', () => {
  const server = new Server();
  before(() => server.start());
  after(async () => {
    closeAll();
    assert.equal(await server.stop(), 0, server.log);
  });

  test('clients reconnect, say recovered:false (memory history is gone) and traffic resumes', async () => {
    const reader = client(server.url, { user: 'reader' });
    const writer = client(server.url, { user: 'writer' });
    const got = inbox(reader);
    const rejoins = [];
    reader.on('rejoined', (r) => rejoins.push(r));
    await reader.join('restart-room');
    await writer.join('restart-room');

    let sent = 0;
    const failures = [];
    let running = true;
    const traffic = (async () => {
      while (running) {
        const n = ++sent;
        await writer.publish('restart-room', n).catch((err) => failures.push([n, err.code]));
        await sleep(10);
      }
    })();
    await waitFor(() => got.length >= 10, 3000, 'traffic before the restart');

    assert.equal(await server.stop(), 0, server.log);
    await sleep(200);
    await server.start();

    await waitFor(() => rejoins.length === 1, 10000, 'the reader to rejoin');
    assert.equal(rejoins[0].recovered, false, 'the restarted memory store cannot recover: the client must say so');
    const before = got.length;
    await waitFor(() => got.length >= before + 10, 5000, 'traffic after the restart');
    running = false;
    await traffic;
    // Publishes the restart interrupted fail visibly; none is left hanging.
    assert.ok(failures.every(([, code]) => code === 'disconnected'), JSON.stringify(failures));
    const data = got.map((m) => m.data);
    assert.deepEqual(data, [...data].sort((x, y) => x - y), 'messages stay in publish order');
  });
});

describe('two nodes on one Redis', () => {
  const redis = new Redis();
  let a;
  let b;
  before(async () => {
    await redis.start();
    a = await new Server({ args: ['--redis', redis.url, '--node-id', 'node-a'] }).start();
    b = await new Server({ args: ['--redis', redis.url, '--node-id', 'node-b'] }).start();
  });
  after(async () => {
    closeAll();
    assert.equal(await a.stop(), 0, a.log);
    assert.equal(await b.stop(), 0, b.log);
    await redis.stop();
  });

  test('a node restart loses nothing: the client rejoins with recovered:true and gets every message once', async () => {
    const reader = client(a.url, { user: 'rita' });
    const writer = client(b.url, { user: 'walt' });
    const got = inbox(reader);
    const rejoins = [];
    reader.on('rejoined', (r) => rejoins.push(r));
    await reader.join('cluster-room');
    await writer.join('cluster-room');
    for (let i = 1; i <= 5; i++) await writer.publish('cluster-room', i);
    await waitFor(() => got.length === 5, 5000, 'the messages from the other node');

    assert.equal(await a.stop(), 0, a.log);
    for (let i = 6; i <= 15; i++) await writer.publish('cluster-room', i);
    await a.start();
    await waitFor(() => rejoins.length === 1, 10000, 'the reader to rejoin node a');
    assert.deepEqual({ recovered: rejoins[0].recovered, missed: rejoins[0].missed }, { recovered: true, missed: 10 });
    for (let i = 16; i <= 20; i++) await writer.publish('cluster-room', i);
    await waitFor(() => got.length >= 20, 5000, 'all twenty messages');
    await sleep(100);
    assert.deepEqual(got.map((m) => m.data), Array.from({ length: 20 }, (_, i) => i + 1));
  });
});

describe('authentication with a token', () => {
  const secret = 'js-test-secret-of-at-least-32-bytes!';
  const server = new Server({ args: ['--auth', 'jwt'], env: { WSFAN_JWT_SECRET: secret } });
  before(() => server.start());
  after(async () => {
    closeAll();
    assert.equal(await server.stop(), 0, server.log);
  });

  /** A token from `wsfan token`, as the README shows. */
  function mint(...args) {
    const p = spawnSync(BIN, ['token', ...args], { env: { ...process.env, WSFAN_JWT_SECRET: secret }, encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    return p.stdout.trim();
  }

  test('the token option is presented, asked again at each connect, and its rights hold', async () => {
    let asked = 0;
    const c = client(server.url, {
      token: () => {
        asked += 1;
        return mint('--sub', 'tina', '--rooms', 'js-auth:*', '--publish', 'js-auth:*', '--ttl', '60');
      },
    });
    const { welcome } = await c.once('connected');
    assert.equal(welcome.user, 'tina');
    assert.equal(typeof welcome.exp, 'number');
    assert.equal(asked, 1);
    await c.join('js-auth:one');
    assert.match((await c.publish('js-auth:one', { hi: 1 })).offset, /^\d+-\d+$/);
    await assert.rejects(c.join('elsewhere'), (err) => err instanceof WsfanError && err.code === 'forbidden');
  });
});
