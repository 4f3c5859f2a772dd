// chat.test.mjs - the pages served by wsfan, in Debian's Chromium driven by
// playwright-core: two pages chat with each other, typing shows on the other
// page, presence lists both, and after a server restart the pages reconnect
// and chat again; with two nodes on one Redis, each page on its own node, a
// restarted node's page shows the messages it missed. Screenshots of the
// chat and the dashboard go to results/browser/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium } from './chromium.mjs';
import { REPO, Redis, Server, sleep } from '../js/server.mjs';

const RESULTS = path.join(REPO, 'results', 'browser');
const server = new Server();
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

async function openChat(name, room, node = server) {
  const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  page.errors = errors;
  await page.goto(`${node.http}/`);
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

test('two pages chat, see typing and presence, and survive a server restart', async () => {
  const alice = await openChat('alice', 'lobby');
  const bob = await openChat('bob', 'lobby');

  // Presence lists both, on both pages.
  for (const page of [alice, bob]) {
    await page.waitForSelector('#who li[data-user="alice"]', { timeout: 5000 });
    await page.waitForSelector('#who li[data-user="bob"]', { timeout: 5000 });
  }

  await say(alice, 'hello bob');
  await bob.waitForSelector('#messages li:has-text("hello bob")', { timeout: 5000 });

  // Typing (an ephemeral publish) shows on the other page only.
  await bob.type('#text', 'typing a reply', { delay: 20 });
  await alice.waitForSelector('#typing:has-text("bob is typing")', { timeout: 5000 });
  assert.equal(await bob.textContent('#typing'), '', 'a page does not show its own typing');
  await alice.screenshot({ path: path.join(RESULTS, 'chat-alice.png') });
  await bob.press('#text', 'Enter');
  await alice.waitForSelector('#messages li:has-text("typing a reply")', { timeout: 5000 });
  await alice.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: 5000 });

  // A message published over the HTTP API shows with no sender.
  await server.publish({ room: 'lobby', data: { text: 'notice from a service' } });
  await bob.waitForSelector('#messages li.system:has-text("notice from a service")', { timeout: 5000 });

  // A late joiner sees the history.
  const carol = await openChat('carol', 'lobby');
  await carol.waitForSelector('#messages li:has-text("hello bob")', { timeout: 5000 });
  await carol.close();

  // Restart: both pages reconnect by themselves and chat again.
  assert.equal(await server.stop(), 0, server.log);
  await alice.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5000 });
  await sleep(300);
  await server.start();
  for (const page of [alice, bob]) {
    await page.waitForSelector('#status[data-state="open"]', { timeout: 15000 });
    await page.waitForSelector('#notice.on', { timeout: 5000 }); // memory history is gone: recovered false
    await page.waitForSelector('#who li[data-user="alice"]', { timeout: 5000 });
    await page.waitForSelector('#who li[data-user="bob"]', { timeout: 5000 });
  }
  await say(bob, 'back after the restart');
  await alice.waitForSelector('#messages li:has-text("back after the restart")', { timeout: 5000 });
  assert.ok(await alice.isVisible('#messages li:has-text("hello bob")'), 'what was on screen stays');
  await alice.screenshot({ path: path.join(RESULTS, 'chat-after-restart.png') });

  for (const page of [alice, bob]) assert.deepEqual(page.errors, [], 'no script errors on the page');
  await alice.close();
  await bob.close();
});

test('two nodes on one Redis: pages on different nodes chat, and a restarted node loses nothing', async () => {
  const redis = await new Redis().start();
  const nodeA = await new Server({ args: ['--redis', redis.url, '--node-id', 'node-a'] }).start();
  const nodeB = await new Server({ args: ['--redis', redis.url, '--node-id', 'node-b'] }).start();
  try {
    const alice = await openChat('alice', 'cluster', nodeA);
    const bob = await openChat('bob', 'cluster', nodeB);
    for (const page of [alice, bob]) {
      await page.waitForSelector('#who li[data-user="alice"]', { timeout: 5000 });
      await page.waitForSelector('#who li[data-user="bob"]', { timeout: 5000 });
    }
    await say(alice, 'hello from node a');
    await bob.waitForSelector('#messages li:has-text("hello from node a")', { timeout: 5000 });
    await bob.type('#text', 'typing across nodes', { delay: 20 });
    await alice.waitForSelector('#typing:has-text("bob is typing")', { timeout: 5000 });
    await bob.press('#text', 'Enter');
    await alice.waitForSelector('#messages li:has-text("typing across nodes")', { timeout: 5000 });

    // Alice's node goes away; bob keeps talking on his.
    assert.equal(await nodeA.stop(), 0, nodeA.log);
    await alice.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5000 });
    for (let i = 1; i <= 3; i++) await say(bob, `while you were away ${i}`);
    await bob.waitForSelector('#messages li:has-text("while you were away 3")', { timeout: 5000 });
    await nodeA.start();
    await alice.waitForSelector('#status[data-state="open"]', { timeout: 15000 });
    for (let i = 1; i <= 3; i++) {
      await alice.waitForSelector(`#messages li:has-text("while you were away ${i}")`, { timeout: 5000 });
    }
    assert.equal(await alice.isVisible('#notice.on'), false, 'Redis history reaches back: nothing to warn about');
    const lines = await alice.$$eval('#messages li .text', (els) => els.map((e) => e.textContent));
    assert.deepEqual(lines, ['hello from node a', 'typing across nodes', 'while you were away 1',
      'while you were away 2', 'while you were away 3'], 'every message once, in order');
    await alice.screenshot({ path: path.join(RESULTS, 'chat-two-nodes-after-restart.png') });
    for (const page of [alice, bob]) assert.deepEqual(page.errors, [], 'no script errors on the page');
    await alice.close();
    await bob.close();
  } finally {
    assert.equal(await nodeA.stop(), 0, nodeA.log);
    assert.equal(await nodeB.stop(), 0, nodeB.log);
    await redis.stop();
  }
});

test('the dashboard shows live stats', async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await page.goto(`${server.http}/dashboard`);
  await page.waitForFunction(() => /\d/.test(document.querySelector('#connections').textContent), null,
    { timeout: 5000 });
  await page.waitForSelector('#bus.ok', { timeout: 5000 });
  await page.waitForFunction(() => /ms$/.test(document.querySelector('#rtt').textContent), null, { timeout: 5000 });
  // It refreshes by itself: traffic shows up without a reload.
  for (let i = 0; i < 20; i++) await server.publish({ room: 'busy-room', data: i });
  await page.waitForSelector('#workers tr', { timeout: 5000 });
  await page.screenshot({ path: path.join(RESULTS, 'dashboard.png') });
  await page.close();
});
