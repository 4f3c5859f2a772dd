// tls.test.mjs - the chat page over https:// and its WebSocket over wss://
// in Debian's Chromium: wsfan with --tls-cert (a CA and certificate made by
// the openssl CLI here), Chromium trusting exactly that certificate's key
// (--ignore-certificate-errors-spki-list, not a blanket ignore). Two pages
// chat; the page's socket is wss:// and the server counts the handshakes.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { launchChromium } from './chromium.mjs';
import { BIN, freePort, sleep } from '../js/server.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'wsfan-tls-browser-'));
let proc;
let log = '';
let port;
let browser;

function openssl(...args) {
  return execFileSync('openssl', args, { cwd: dir, stdio: ['pipe', 'pipe', 'ignore'] });
}

/** A CA, and a certificate for localhost signed by it. */
function makeCerts() {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key',
    '-out', 'ca.pem', '-days', '2', '-subj', '/CN=wsfan browser test CA');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key',
    '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'san.ext', '-out', 'server.pem');
  // Chromium's switch takes base64(sha256(SubjectPublicKeyInfo)) of the certificate.
  const spki = openssl('x509', '-in', 'server.pem', '-pubkey', '-noout');
  const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: spki });
  return execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: der }).toString('base64');
}

/** GET over https trusting the test CA: [status, body]. */
function get(urlPath) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: urlPath, ca: readFileSync(path.join(dir, 'ca.pem')),
      servername: 'localhost' }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve([res.statusCode, body]));
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
  });
}

before(async () => {
  const spki = makeCerts();
  port = await freePort();
  proc = spawn(BIN, ['--listen', `127.0.0.1:${port}`, '--workers', '2', '--tls-cert', path.join(dir, 'server.pem'),
    '--tls-key', path.join(dir, 'server.key')], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  for (let i = 0; ; i++) {
    assert.equal(proc.exitCode, null, log);
    try {
      if ((await get('/healthz'))[0] === 200) break;
    } catch (e) {
      if (i === 200) throw new Error(`wsfan over TLS did not answer /healthz: ${e}\n${log}`);
    }
    await sleep(50);
  }
  browser = await launchChromium([`--ignore-certificate-errors-spki-list=${spki}`]);
});

after(async () => {
  if (browser) await browser.close();
  if (proc && proc.exitCode === null) {
    proc.kill('SIGTERM');
    await once(proc, 'exit');
  }
  rmSync(dir, { recursive: true, force: true });
  assert.equal(proc.exitCode, 0, log);
  assert.doesNotMatch(log, /AddressSanitizer|LeakSanitizer|runtime error:/);
});

async function openChat(name) {
  const page = await browser.newPage();
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.sockets = sockets;
  await page.goto(`https://localhost:${port}/`);
  await page.fill('#name', name);
  await page.fill('#room', 'tls-lobby');
  await page.click('#join');
  await page.waitForSelector('#status[data-state="open"]', { timeout: 10000 });
  return page;
}

test('the chat page over https talks over wss', async () => {
  const alice = await openChat('alice');
  const bob = await openChat('bob');
  assert.match(alice.sockets[0], new RegExp(`^wss://localhost:${port}/ws`));
  await alice.fill('#text', 'hello over tls');
  await alice.press('#text', 'Enter');
  await bob.waitForSelector('#messages li:has-text("hello over tls")', { timeout: 5000 });
  const [status, metrics] = await get('/metrics');
  assert.equal(status, 200);
  const handshakes = Number(/^wsfan_tls_handshakes_total (\d+)$/m.exec(metrics)[1]);
  assert.ok(handshakes >= 4, `pages, scripts and sockets came over TLS: ${handshakes} handshakes`);
  await alice.close();
  await bob.close();
});
