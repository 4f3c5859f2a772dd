// deflate.test.mjs - permessage-deflate with Debian's Chromium, which offers
// it on every WebSocket: the page's socket reports the negotiated extension,
// receives large events compressed (RSV1, counted by wsfan_deflate_frames_total)
// and small ones plain, all intact and in order, and its own large message,
// which Chromium compresses, reaches the room whole.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchChromium } from './chromium.mjs';
import { Server } from '../js/server.mjs';

const server = new Server({ args: ['--compress-min', '256'] });
let browser;

before(async () => {
  await server.start();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  assert.equal(await server.stop(), 0, server.log);
});

async function metric(name) {
  const text = await (await fetch(`${server.http}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

test('Chromium negotiates permessage-deflate and receives compressed events intact', async () => {
  const page = await browser.newPage();
  await page.goto(`${server.http}/`);
  // The page joins, says it is ready, then collects the events of the room.
  await page.evaluate(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    window.received = [];
    window.ws = ws;
    ws.onerror = () => reject(new Error('socket error'));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === 'welcome') ws.send(JSON.stringify({ type: 'join', room: 'zip', ref: 1 }));
      else if (m.type === 'joined') resolve();
      else if (m.type === 'message') window.received.push(m.data);
    };
  }));
  assert.equal(await page.evaluate(() => window.ws.extensions),
    'permessage-deflate; server_no_context_takeover; client_no_context_takeover');

  const before = await metric('wsfan_deflate_frames_total');
  const sent = [];
  for (let i = 0; i < 20; i++) {
    const data = i % 2 ? `small ${i}` : `large ${i} `.repeat(200 + i * 50);
    sent.push(data);
    await server.publish({ room: 'zip', data });
  }
  // The page's own message: Chromium compresses it, wsfan inflates it.
  const own = 'from the page '.repeat(500);
  sent.push(own);
  await page.evaluate((data) => window.ws.send(JSON.stringify({ type: 'publish', room: 'zip', data })), own);

  await page.waitForFunction((n) => window.received.length >= n, sent.length, { timeout: 10000 });
  const received = await page.evaluate(() => window.received);
  assert.deepEqual(received, sent);
  const compressed = (await metric('wsfan_deflate_frames_total')) - before;
  assert.ok(compressed >= 11, `${compressed} frames compressed for 11 large events`);
  await page.close();
});
