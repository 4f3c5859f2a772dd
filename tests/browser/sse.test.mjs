// sse.test.mjs - the SSE fallback of wsfan.js in Debian's Chromium: the
// page's WebSockets cannot open (they are sent to a port that refuses), so
// the client falls back to an EventSource on /sse. It receives its room's
// messages; then its node is restarted on the same port while another node
// on the same Redis publishes, and the browser's EventSource reconnects by
// itself (Last-Event-ID) with every persisted message once, in order.
// Publishing goes through publishVia, and without it is refused clearly.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchChromium } from './chromium.mjs';
import { Redis, Server, freePort, waitFor } from '../js/server.mjs';

let browser;
let redis;

before(async () => {
  redis = await new Redis().start();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (redis) await redis.stop();
});

// Before any script of the page: every WebSocket goes to a port where
// nothing listens, and every EventSource the page creates is counted.
function breakWebSockets(refusedPort) {
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      super(`ws://127.0.0.1:${refusedPort}/ws`, protocols);
    }
  };
  const NativeEventSource = window.EventSource;
  window.eventSourcesOpened = 0;
  window.EventSource = class extends NativeEventSource {
    constructor(...args) {
      super(...args);
      window.eventSourcesOpened++;
    }
  };
}

async function openPage(node) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  page.errors = errors;
  await page.addInitScript(breakWebSockets, await freePort());
  await page.goto(`${node.http}/healthz`); // any page of the server's origin
  return page;
}

// The page's client, its events recorded in window.seen.
function startClient(page, options) {
  return page.evaluate(async ({ withPublishVia, ...opts }) => {
    const { connect } = await import('/wsfan.js');
    if (withPublishVia) {
      // The app's backend would check the user; here the page posts to the
      // API itself, which answers pages on the loopback without a key.
      opts.publishVia = async ({ room, data, key }) => {
        const res = await fetch('/api/publish', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ room, data, key }),
        });
        if (!res.ok) throw new Error(`publish: ${res.status}`);
        return res.json();
      };
    }
    const client = connect(undefined, opts);
    window.client = client;
    window.seen = { messages: [], fallbacks: [], connected: [], rejoined: [] };
    client.on('roomMessage', (m) => window.seen.messages.push(m));
    client.on('fallback', (f) => window.seen.fallbacks.push(f));
    client.on('connected', (c) => window.seen.connected.push(c.transport));
    client.on('rejoined', (r) => window.seen.rejoined.push(r));
    // Joined before the connection opens, the room is in the first stream's URL.
    const joined = client.join('news');
    await client.connect();
    await joined;
    return client.transport;
  }, options);
}

const texts = (page) => page.evaluate(() => window.seen.messages.map((m) => m.data.n));

test('falls back to SSE, and the EventSource reconnects by itself after a restart, losing nothing', async () => {
  const port = await freePort();
  const nodeA = await new Server({ port, args: ['--redis', redis.url, '--node-id', 'node-a'] }).start();
  const nodeB = await new Server({ args: ['--redis', redis.url, '--node-id', 'node-b'] }).start();
  try {
    const page = await openPage(nodeA);
    const transport = await startClient(page, { user: 'alice', backoffMin: 50, withPublishVia: true });
    assert.equal(transport, 'sse');
    const seen = await page.evaluate(() => window.seen);
    assert.deepEqual(seen.fallbacks, [{ transport: 'sse', attempts: 2 }]);
    assert.deepEqual(seen.connected, ['sse']);

    for (let n = 1; n <= 3; n++) await nodeB.publish({ room: 'news', data: { n } });
    // Through publishVia: an idempotency key, and the ack's offset.
    const ack = await page.evaluate(() => window.client.publish('news', { n: 4 }));
    assert.match(ack.offset, /^\d+-\d+$/);
    await waitFor(async () => (await texts(page)).length === 4, 5000, 'four messages on the page');

    // Node A goes away; node B's publishes are persisted in Redis meanwhile.
    assert.equal(await nodeA.stop(), 0, nodeA.log);
    await waitFor(() => page.evaluate(() => window.client.state === 'reconnecting'), 5000, 'the drop seen');
    for (let n = 5; n <= 7; n++) await nodeB.publish({ room: 'news', data: { n } });
    await nodeA.start();
    await waitFor(async () => (await texts(page)).length >= 7, 15000, 'the missed messages after the restart');
    await nodeB.publish({ room: 'news', data: { n: 8 } });
    await waitFor(async () => (await texts(page)).length >= 8, 5000, 'a live message after the restart');

    assert.deepEqual(await texts(page), [1, 2, 3, 4, 5, 6, 7, 8], 'every message once, in order');
    const after = await page.evaluate(() => ({ ...window.seen, opened: window.eventSourcesOpened }));
    assert.equal(after.opened, 1, 'the same EventSource reconnected by itself');
    assert.deepEqual(after.connected, ['sse', 'sse']);
    assert.deepEqual(after.rejoined.map((r) => [r.room, r.recovered, r.missed]), [['news', true, 3]]);
    assert.deepEqual(page.errors, [], 'no script errors on the page');
    await page.close();
  } finally {
    assert.equal(await nodeA.stop(), 0, nodeA.log);
    assert.equal(await nodeB.stop(), 0, nodeB.log);
  }
});

test('over SSE, joining another room reopens the stream from its offsets; publish without publishVia is refused', async () => {
  const node = await new Server({ args: ['--redis', redis.url] }).start();
  try {
    const page = await openPage(node);
    assert.equal(await startClient(page, { user: 'bob', backoffMin: 50 }), 'sse');
    await node.publish({ room: 'news', data: { n: 1 } });
    await waitFor(async () => (await texts(page)).length === 1, 5000, 'the first message');

    await page.evaluate(() => window.client.join('sports'));
    await node.publish({ room: 'news', data: { n: 2 } });
    await node.publish({ room: 'sports', data: { n: 3 } });
    await waitFor(async () => (await texts(page)).length >= 3, 5000, 'messages of both rooms');
    assert.deepEqual(await texts(page), [1, 2, 3], 'nothing replayed twice by the reopened stream');
    assert.equal(await page.evaluate(() => window.eventSourcesOpened), 2, 'the join opened a new stream');

    const refusal = await page.evaluate(() => window.client.publish('news', { n: 4 }).then(
      () => null, (err) => ({ code: err.code, message: err.message })));
    assert.equal(refusal.code, 'unsupported');
    assert.match(refusal.message, /publishVia/);
    const sendRefusal = await page.evaluate(() => window.client.send('alice', 'hi').catch((err) => err.code));
    assert.equal(sendRefusal, 'unsupported');
    assert.deepEqual(page.errors, [], 'no script errors on the page');
    await page.close();
  } finally {
    assert.equal(await node.stop(), 0, node.log);
  }
});
