// outbox.test.mjs - the publish outbox of clients/js/wsfan.js against a real
// wsfan: idempotency keys on persisted publishes, resends after a hard
// socket kill with the same key, ephemeral publishes sent at most once, the
// outbox's bound, and a rejoin refused while Redis is down.
//
// The tests of a resend that the server had already stored run on a Redis
// node, the memory engine's idempotency having tests of its own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { connect } from '../../clients/js/wsfan.js';
import { Proxy, Redis, Server, sleep, waitFor } from './server.mjs';

const clients = [];

/** A client whose every sent command is recorded in `sent`. */
function client(url, options = {}) {
  const sent = [];
  class Recording extends WebSocket {
    send(data, ...rest) {
      sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  }
  const c = connect(url, { WebSocket: Recording, backoffMin: 50, backoffMax: 400, timeout: 5000, ...options });
  c.sent = sent;
  clients.push(c);
  return c;
}

/** Destroys the client's TCP socket: no close frame, as a network failure. */
function hardKill(c) {
  c.socket._socket.destroy();
}

/** The room's stored messages whose data is data. */
async function stored(server, room, data) {
  const res = await fetch(`${server.http}/api/history?room=${room}&limit=1000`);
  const { messages } = await res.json();
  return messages.filter((m) => JSON.stringify(m.data) === JSON.stringify(data));
}

function closeAll() {
  while (clients.length) clients.pop().close();
}

describe('the outbox on one node', () => {
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

  test('every persisted publish carries a key of its own; a given key is kept; ephemeral ones get none', async () => {
    const c = client(server.url, { user: 'kate' });
    await c.join('keys');
    await Promise.all([c.publish('keys', 1), c.publish('keys', 2), c.publish('keys', 3, { key: 'mine' })]);
    await c.publish('keys', 'typing', { ephemeral: true });
    const publishes = c.sent.filter((m) => m.type === 'publish');
    const keys = publishes.map((m) => m.key);
    assert.equal(keys[2], 'mine');
    assert.equal(keys[3], undefined);
    assert.notEqual(keys[0], keys[1]);
    for (const k of keys.slice(0, 2)) assert.ok(typeof k === 'string' && Buffer.byteLength(k) <= 64, k);
    const other = client(server.url);
    await other.join('keys');
    await other.publish('keys', 4);
    assert.ok(!keys.includes(other.sent.find((m) => m.type === 'publish').key), 'two clients never share a key');
  });

  test('an ephemeral publish is sent at most once: it rejects on disconnect and is never resent', async () => {
    const c = client(server.url, { user: 'nina' });
    await c.join('eph');
    const lost = c.publish('eph', 'cursor', { ephemeral: true });
    hardKill(c);
    await assert.rejects(lost, (err) => err.code === 'disconnected');
    await assert.rejects(c.publish('eph', 'while away', { ephemeral: true }), (err) => err.code === 'disconnected');
    await c.once('rejoined');
    await c.publish('eph', 'after', { ephemeral: true });
    assert.deepEqual(c.sent.filter((m) => m.type === 'publish').map((m) => m.data), ['cursor', 'after']);
  });

  test('the outbox is bounded: past outboxLimit a publish rejects at once, the others go out after the reconnect', async () => {
    const c = client(proxy.url, { user: 'otto', outboxLimit: 2 });
    await c.join('bounded');
    const closed = c.once('disconnected');
    proxy.cut();
    await closed;
    const a = c.publish('bounded', 'a');
    const b = c.publish('bounded', 'b');
    await assert.rejects(c.publish('bounded', 'c'), (err) => err.code === 'outbox_full' && /2 publishes/.test(err.message));
    proxy.resume();
    const acks = await Promise.all([a, b]);
    assert.ok(acks.every((x) => /^\d+-\d+$/.test(x.offset)));
    assert.deepEqual((await c.history('bounded')).map((m) => m.data), ['a', 'b']);
    assert.match((await c.publish('bounded', 'c')).offset, /^\d+-\d+$/, 'room again once acknowledged');
  });
});

describe('the outbox on a Redis node', () => {
  const redis = new Redis();
  let node;
  let proxy;
  before(async () => {
    await redis.start();
    node = await new Server({ args: ['--redis', redis.url, '--node-id', 'outbox', '--redis-timeout', '500',
      '--redis-backoff-min', '50', '--redis-backoff-max', '200'] }).start();
    proxy = await new Proxy(node.port).start();
  });
  after(async () => {
    closeAll();
    await proxy.close();
    assert.equal(await node.stop(), 0, node.log);
    await redis.stop();
  });

  test('a publish whose socket is hard-killed right after sending is in the room exactly once after reconnect', async () => {
    const c = client(node.url, { user: 'liam' });
    await c.join('killed');
    const ack = c.publish('killed', { text: 'once' });
    hardKill(c);
    const { offset } = await ack;
    const attempts = c.sent.filter((m) => m.type === 'publish');
    assert.equal(attempts.length, 2, 'sent again after the reconnect');
    assert.equal(attempts[1].key, attempts[0].key);
    const copies = await stored(node, 'killed', { text: 'once' });
    assert.deepEqual(copies.map((m) => m.offset), [offset]);
  });

  test('a publish stored by the server whose ack never arrived is acknowledged with its first offset', async () => {
    const c = client(proxy.url, { user: 'mona' });
    await c.join('ack-lost');
    proxy.mute();
    const ack = c.publish('ack-lost', 'stored once');
    const first = await waitFor(async () => (await stored(node, 'ack-lost', 'stored once'))[0], 3000, 'the store');
    proxy.cut();
    proxy.resume();
    assert.equal((await ack).offset, first.offset);
    assert.equal(c.sent.filter((m) => m.type === 'publish').length, 2, 'sent again after the reconnect');
    assert.equal((await stored(node, 'ack-lost', 'stored once')).length, 1);
  });

  test('a rejoin refused as unavailable is asked again, and the publishes wait for it', async () => {
    const c = client(node.url, { user: 'pia', timeout: 10000 });
    await c.join('redis-down');
    await redis.kill();
    hardKill(c);
    await c.once('connected');
    const ack = c.publish('redis-down', 'after the outage');
    await waitFor(() => c.sent.filter((m) => m.type === 'join').length >= 3, 5000, 'the rejoin to be asked again');
    assert.equal(c.sent.filter((m) => m.type === 'publish').length, 0, 'nothing published before the rejoin');
    await redis.start();
    assert.match((await ack).offset, /^\d+-\d+$/);
    assert.equal(c.rooms.get('redis-down').joined, true);
    await sleep(100);
    assert.deepEqual((await stored(node, 'redis-down', 'after the outage')).length, 1);
  });
});
