// token.test.mjs - clients/js/wsfan.js under --auth jwt against a real
// wsfan: connect() is explicit and resolves with the first welcome,
// getToken is asked at every (re)connect, and a token is swapped with
// `refresh` before its exp, so that the server never closes the
// connection for expiry.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { WsfanClient } from '../../clients/js/wsfan.js';
import { Proxy, Server, mintToken, sleep, waitFor } from './server.mjs';

const SECRET = 'token-test-secret-0123456789';
const mint = (sub, ttl) => mintToken(SECRET, sub, ttl);

describe('tokens', () => {
  const server = new Server({ args: ['--auth', 'jwt', '--jwt-leeway', '0'], env: { WSFAN_JWT_SECRET: SECRET } });
  let proxy;
  const clients = [];
  function client(url, options) {
    const c = new WsfanClient(url, { WebSocket, backoffMin: 50, backoffMax: 200, timeout: 5000, ...options });
    clients.push(c);
    return c;
  }
  before(async () => {
    await server.start();
    proxy = await new Proxy(server.port).start();
  });
  after(async () => {
    for (const c of clients) c.close();
    await proxy.close();
    assert.equal(await server.stop(), 0, server.log);
  });

  test('nothing opens before connect(); connect() resolves with the welcome, once', async () => {
    let asked = 0;
    const c = client(server.url, { getToken: async () => (asked++, mint('ann', 600)) });
    await sleep(100);
    assert.equal(c.state, 'idle');
    assert.equal(asked, 0);
    const first = c.connect();
    assert.equal(c.connect(), first);
    const welcome = await first;
    assert.equal(welcome.user, 'ann');
    assert.equal(typeof welcome.exp, 'number');
    assert.equal(asked, 1);
    await c.join('token-room');
    assert.ok((await c.publish('token-room', 1)).offset);
  });

  test('a reconnect asks getToken again', async () => {
    const tokens = [];
    const c = client(proxy.url, { getToken: () => (tokens.push(mint('bob', 600)), tokens.at(-1)) });
    await c.connect();
    proxy.cut();
    await sleep(100);
    proxy.resume();
    await waitFor(() => tokens.length >= 2 && c.state === 'open', 5000, 'the reconnect');
  });

  test('a token is refreshed before its exp and the connection outlives it', async () => {
    let asked = 0;
    const c = client(server.url, { refreshBefore: 2000, getToken: () => mint('cat', asked++ ? 600 : 3) });
    const closes = [];
    c.on('disconnected', (ev) => closes.push(ev));
    const welcome = await c.connect();
    const refreshed = await c.once('refreshed');
    assert.ok(refreshed.exp > welcome.exp + 500, `the new exp ${refreshed.exp} is the fresh token's`);
    await sleep(Math.max(0, welcome.exp * 1000 - Date.now()) + 1500);
    assert.deepEqual(closes, [], 'not closed at the first token\'s exp');
    assert.equal((await c.ping()).type, 'pong');
  });

  test('close() before the first welcome rejects connect() with "closed"', async () => {
    const c = client(server.url, { getToken: () => new Promise(() => {}) });
    const pending = c.connect();
    c.close();
    await assert.rejects(pending, (err) => err.code === 'closed');
  });
});
