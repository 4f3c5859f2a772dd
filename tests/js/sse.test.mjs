// sse.test.mjs - the SSE transport of clients/js/wsfan.js in Node against a
// real wsfan, through tests/js/eventsource.mjs (Node 20 has no EventSource;
// the browser's own is tested in tests/browser/sse.test.mjs): room messages,
// publish, history and presence over the HTTP API with apiKey, the clear
// refusals of what an event stream cannot do, a stream that resumes by
// itself after a network drop with nothing lost or repeated, a stream
// refused for an expired token reopened with a fresh one, and the fallback
// from WebSockets that never open.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { WsfanClient } from '../../clients/js/wsfan.js';
import { TestEventSource } from './eventsource.mjs';
import { Proxy, Server, freePort, mintToken, waitFor } from './server.mjs';

const API_KEY = 'sse-test-api-key-0123456789';
const SECRET = 'sse-test-secret-0123456789';

const clients = [];
function sseClient(url, options) {
  const c = new WsfanClient(url, {
    transports: ['sse'], EventSource: TestEventSource, backoffMin: 50, backoffMax: 200, timeout: 5000, ...options,
  });
  clients.push(c);
  c.connect().catch(() => {}); // rooms joined in this tick are in the first stream's URL
  return c;
}

function record(c) {
  const seen = { messages: [], rejoined: [], failures: [], connected: [] };
  c.on('roomMessage', (m) => seen.messages.push(m));
  c.on('rejoined', (r) => seen.rejoined.push(r));
  c.on('failure', (err) => seen.failures.push(err));
  c.on('connected', (ev) => seen.connected.push(ev));
  return seen;
}

const numbers = (seen) => seen.messages.map((m) => m.data.n);

after(() => {
  for (const c of clients) c.close();
});

describe('over SSE with an API key', () => {
  const server = new Server({ env: { WSFAN_API_KEY: API_KEY } });
  let proxy;
  before(async () => {
    await server.start();
    proxy = await new Proxy(server.port).start();
  });
  after(async () => {
    await proxy.close();
    assert.equal(await server.stop(), 0, server.log);
  });

  test('receives, publishes once per key, reads history and presence; refuses what a stream cannot do', async () => {
    const c = sseClient(server.url, { user: 'alice', apiKey: API_KEY });
    const seen = record(c);
    const joined = c.join('news');
    assert.equal(await c.connect(), null, 'no welcome over SSE');
    assert.equal((await joined).room, 'news');
    assert.equal(c.transport, 'sse');
    assert.equal(seen.connected[0].transport, 'sse');

    const ack = await c.publish('news', { n: 1 }, { key: 'k-1' });
    assert.match(ack.offset, /^\d+-\d+$/);
    assert.equal((await c.publish('news', { n: 1 }, { key: 'k-1' })).offset, ack.offset, 'the same key, the same offset');
    assert.equal((await c.publish('news', { typing: true }, { ephemeral: true })).offset, null);
    await waitFor(() => seen.messages.length === 2, 5000, 'the persisted and the ephemeral message');
    assert.deepEqual(seen.messages.map((m) => [m.from, m.offset]), [[null, ack.offset], [null, undefined]]);

    assert.deepEqual((await c.history('news')).map((m) => m.data), [{ n: 1 }]);
    assert.deepEqual((await c.presence('news')).map((u) => u.user), ['alice']);
    for (const refused of [c.send('bob', 'hi'), c.broadcast('hi'), c.ping()]) {
      await assert.rejects(refused, { code: 'unsupported', message: /SSE fallback/ });
    }
  });

  test('without publishVia or apiKey, publish, history and presence say what to configure', async () => {
    const c = sseClient(server.url, { user: 'bob' });
    await c.join('news');
    await assert.rejects(c.publish('news', 1), { code: 'unsupported', message: /publishVia/ });
    await assert.rejects(c.publish('news', 1, { ephemeral: true }), { code: 'unsupported', message: /publishVia/ });
    await assert.rejects(c.history('news'), { code: 'unsupported', message: /apiKey/ });
  });

  test('publishVia carries the key; a transient refusal is retried with the same key', async () => {
    const calls = [];
    const c = sseClient(server.url, {
      user: 'carol',
      publishVia: async (p) => {
        calls.push(p);
        if (calls.length === 1) throw Object.assign(new Error('backend busy'), { code: 'unavailable' });
        return { offset: '1-0' };
      },
    });
    await c.join('news');
    assert.deepEqual(await c.publish('news', { n: 2 }), { type: 'ack', offset: '1-0' });
    assert.equal(calls.length, 2);
    assert.equal(calls[0].key, calls[1].key, 'resent with its key');
    assert.deepEqual({ ...calls[1], key: undefined }, { room: 'news', data: { n: 2 }, key: undefined, ephemeral: false });
  });

  test('after a network drop the same stream resumes by itself: nothing lost, nothing twice', async () => {
    const c = sseClient(proxy.url, { user: 'dave', apiKey: API_KEY });
    const seen = record(c);
    await c.join('drops');
    const opened = TestEventSource.opened;
    for (let n = 1; n <= 3; n++) await server.publish({ room: 'drops', data: { n } });
    await waitFor(() => seen.messages.length === 3, 5000, 'the first messages');

    proxy.cut();
    await waitFor(() => c.state === 'reconnecting', 5000, 'the drop seen');
    for (let n = 4; n <= 6; n++) await server.publish({ room: 'drops', data: { n } });
    proxy.resume();
    await waitFor(() => seen.messages.length >= 6, 10000, 'the missed messages');
    await server.publish({ room: 'drops', data: { n: 7 } });
    await waitFor(() => seen.messages.length >= 7, 5000, 'a live message');

    assert.deepEqual(numbers(seen), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(TestEventSource.opened, opened, 'the EventSource reconnected by itself');
    assert.deepEqual(seen.rejoined.map((r) => [r.room, r.recovered, r.missed]), [['drops', true, 3]]);
  });

  test('a join or a leave opens a new stream from the offsets seen', async () => {
    const c = sseClient(proxy.url, { user: 'erin', apiKey: API_KEY });
    const seen = record(c);
    await c.join('a');
    await server.publish({ room: 'a', data: { n: 1 } });
    await waitFor(() => seen.messages.length === 1, 5000, 'the first message');
    // Offline, the page joins b: the new stream must start where a was.
    proxy.cut();
    await waitFor(() => c.state === 'reconnecting', 5000, 'the drop seen');
    await server.publish({ room: 'a', data: { n: 2 } });
    const opened = TestEventSource.opened;
    const joinedB = c.join('b');
    await waitFor(() => TestEventSource.opened > opened, 5000, 'a new stream for a and b');
    proxy.resume();
    await joinedB;
    await server.publish({ room: 'b', data: { n: 3 } });
    await waitFor(() => seen.messages.length >= 3, 5000, 'the missed message of a and the one of b');
    await c.leave('a');
    await waitFor(() => c.state === 'open' && seen.connected.length === 3, 5000, 'the stream reopened without a');
    await server.publish({ room: 'a', data: { n: 4 } });
    await server.publish({ room: 'b', data: { n: 5 } });
    await waitFor(() => seen.messages.length >= 4, 5000, 'the message of b');
    assert.deepEqual(numbers(seen), [1, 2, 3, 5], 'nothing lost, nothing twice, nothing of a room left');
  });
});

describe('over SSE with tokens', () => {
  const server = new Server({ args: ['--auth', 'jwt', '--jwt-leeway', '0'], env: { WSFAN_JWT_SECRET: SECRET } });
  before(() => server.start());
  after(async () => assert.equal(await server.stop(), 0, server.log));

  test('a stream refused for its expired token is reopened with a fresh one, from where it was', async () => {
    const tokens = [];
    const c = sseClient(server.url, {
      getToken: async () => {
        tokens.push(mintToken(SECRET, 'frank', tokens.length === 0 ? 2 : 600));
        return tokens.at(-1);
      },
    });
    const seen = record(c);
    await c.join('expiring');
    await server.publish({ room: 'expiring', data: { n: 1 } });
    await waitFor(() => tokens.length === 2 && c.state === 'open', 10000, 'the stream reopened with a fresh token');
    assert.ok(seen.failures.some((err) => err.code === 'refused'), 'the refusal is reported');
    await server.publish({ room: 'expiring', data: { n: 2 } });
    await waitFor(() => seen.messages.length >= 2, 5000, 'a message on the new stream');
    assert.deepEqual(numbers(seen), [1, 2]);
  });
});

test('falls back to SSE after fallbackAfter WebSockets that never open, and says so', async () => {
  const server = await new Server().start();
  try {
    // A WebSocket whose connection is refused: it closes without a welcome.
    class RefusedWebSocket {
      constructor() {
        setTimeout(() => this.onclose({ code: 1006, reason: '' }), 10);
      }
    }
    const c = new WsfanClient(server.url, {
      WebSocket: RefusedWebSocket, EventSource: TestEventSource, user: 'gina', fallbackAfter: 3, backoffMin: 20, backoffMax: 50,
    });
    clients.push(c);
    const fallbacks = [];
    c.on('fallback', (f) => fallbacks.push(f));
    assert.equal(c.transport, 'websocket');
    c.connect().catch(() => {});
    await c.join('late');
    assert.equal(c.transport, 'sse');
    assert.deepEqual(fallbacks, [{ transport: 'sse', attempts: 3 }]);
  } finally {
    assert.equal(await server.stop(), 0, server.log);
  }
});

test('options of the wrong kind are refused when the client is made', () => {
  const url = 'ws://127.0.0.1:9/ws';
  assert.throws(() => new WsfanClient(url, { transports: ['websocket', 'polling'] }), { name: 'TypeError', message: /transports/ });
  assert.throws(() => new WsfanClient(url, { transports: [] }), { name: 'TypeError', message: /transports/ });
  assert.throws(() => new WsfanClient(url, { fallbackAfter: 0, EventSource: TestEventSource }), { name: 'TypeError', message: /fallbackAfter/ });
  assert.throws(() => new WsfanClient(url, { publishVia: 'https://x', EventSource: TestEventSource }), { name: 'TypeError', message: /publishVia/ });
  assert.throws(() => new WsfanClient(url, { transports: ['sse'] }), { message: /neither transport/ });
});
