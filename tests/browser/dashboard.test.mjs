// dashboard.test.mjs - the dashboard's admin actions in Debian's Chromium,
// driven by playwright-core, on a server with an API key: the page asks for
// the key, then looks up a room's presence and history, publishes a test
// message that a connected client receives, and disconnects a user whose
// connection then closes with 1008; an API error shows as its JSON message.
// A screenshot of the admin panel goes to results/browser/.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { launchChromium } from './chromium.mjs';
import { REPO, Server, waitFor } from '../js/server.mjs';

const RESULTS = path.join(REPO, 'results', 'browser');
const KEY = 'dashboard-test-key-0123456789';
const server = new Server({ env: { WSFAN_API_KEY: KEY } });
let browser;

before(async () => {
  mkdirSync(RESULTS, { recursive: true });
  await server.start();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  assert.equal(await server.stop(), 0, server.log);
});

/** A WebSocket client of user in room: .messages collects what arrives,
 * .closed resolves with [code, reason]. */
async function member(user, room) {
  const ws = new WebSocket(`${server.url}?user=${user}`);
  const messages = [];
  ws.on('message', (data) => messages.push(JSON.parse(data)));
  const closed = once(ws, 'close').then(([code, reason]) => [code, reason.toString()]);
  await once(ws, 'open');
  ws.send(JSON.stringify({ type: 'join', room }));
  await waitFor(() => messages.some((m) => m.type === 'joined'), 5000, `${user} to join ${room}`);
  return { ws, messages, closed };
}

test('the admin panel looks up a room, publishes to it and disconnects a user', async () => {
  const alice = await member('alice', 'ops-room');
  const bob = await member('bob', 'ops-room');
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  await page.goto(`${server.http}/dashboard`);

  // The server has a key: the page asks for it, and the actions use it.
  await page.waitForSelector('#auth.on', { timeout: 5000 });
  await page.fill('#lookup-room', 'ops-room');
  await page.click('#lookup-form button');
  await page.waitForSelector('#lookup-result.bad:has-text("unauthorized")', { timeout: 5000 });
  await page.fill('#key', KEY);
  await page.click('#auth-form button');

  // A message that is in history, then the lookup.
  await page.fill('#publish-room', 'ops-room');
  await page.fill('#publish-data', '{"text":"hello from the dashboard"}');
  await page.click('#publish-form button');
  await page.waitForSelector('#publish-result.ok:has-text("published at offset")', { timeout: 5000 });
  await waitFor(() => alice.messages.some((m) => m.type === 'message' && m.data?.text === 'hello from the dashboard'),
    5000, 'alice to get the published message');
  const got = alice.messages.find((m) => m.type === 'message');
  assert.equal(got.from, null, 'a message published over the API has no sender');

  await page.click('#lookup-form button');
  await page.waitForSelector('#lookup-presence li:has-text("alice (1 connection)")', { timeout: 5000 });
  await page.waitForSelector('#lookup-presence li:has-text("bob (1 connection)")', { timeout: 5000 });
  await page.waitForSelector('#lookup-history li:has-text("hello from the dashboard")', { timeout: 5000 });

  // An error of the API shows as its code and message.
  await page.fill('#lookup-room', 'no spaces allowed');
  await page.click('#lookup-form button');
  await page.waitForSelector('#lookup-result.bad:has-text("room_invalid: room must be")', { timeout: 5000 });

  // Disconnect bob: his connection closes with 1008, alice's stays.
  await page.fill('#disconnect-user', 'bob');
  await page.click('#disconnect-form button');
  await page.waitForSelector('#disconnect-result.ok:has-text("bob: closed 1 connection on this node")',
    { timeout: 5000 });
  assert.deepEqual(await bob.closed, [1008, 'disconnected by an operator']);
  assert.equal(alice.ws.readyState, WebSocket.OPEN, 'alice stays connected');
  // With the key, the stats load too and the key's panel goes away.
  await page.waitForSelector('#bus.ok', { timeout: 5000 });
  await page.waitForSelector('#auth', { state: 'hidden', timeout: 5000 });
  await page.screenshot({ path: path.join(RESULTS, 'dashboard-admin.png'), fullPage: true });

  assert.deepEqual(errors, [], 'no script errors on the page');
  alice.ws.close();
  await alice.closed;
  await page.close();
});
