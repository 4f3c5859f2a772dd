// server.mjs - helpers for the Node tests of clients/js and the browser
// tests: start build/wsfan (or $WSFAN_BIN) on a free port and stop it by
// its PID, publish over the HTTP API, tokens, a redis-server for several
// nodes, and a TCP proxy that can cut every connection to simulate a network drop.
// Every wait is bounded.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.WSFAN_BIN || path.join(REPO, 'build', 'wsfan');
export const HOST = '127.0.0.1';

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves when check() returns a truthy value; rejects after ms. */
export async function waitFor(check, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

function b64url(x) {
  return Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
}

/** An HS256 token for --auth jwt with secret: sub, expiring in ttl seconds, any room. */
export function mintToken(secret, sub, ttl) {
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, exp: Math.floor(Date.now() / 1000) + ttl, rooms: ['*'], publish: ['*'] })}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, HOST);
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

function serverEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WSFAN_')) env[k] = v;
  return { ...env, ...extra };
}

/** One wsfan process. start() again after stop() or kill() restarts it on the same port. */
export class Server {
  constructor({ port, args = [], env = {} } = {}) {
    this.port = port;
    this.args = args;
    this.env = env;
    this.proc = null;
    this.log = '';
  }

  get url() {
    return `ws://${HOST}:${this.port}/ws`;
  }

  get http() {
    return `http://${HOST}:${this.port}`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const proc = spawn(BIN, ['--listen', `${HOST}:${this.port}`, '--workers', '2', ...this.args], {
      env: serverEnv(this.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    proc.stdout.on('data', (d) => (this.log += d));
    proc.stderr.on('data', (d) => (this.log += d));
    this.exited = once(proc, 'exit');
    await waitFor(async () => {
      if (proc.exitCode !== null) throw new Error(`wsfan exited with ${proc.exitCode}: ${this.log}`);
      try {
        return (await fetch(`${this.http}/healthz`)).status === 200;
      } catch {
        return false;
      }
    }, 10000, `wsfan on port ${this.port} to answer /healthz`);
    return this;
  }

  /** SIGTERM to the PID; resolves with the exit code (SIGKILL past 10 s),
   * or -1 when the log holds a sanitizer report. */
  async stop() {
    const proc = this.proc;
    if (!proc) return null;
    if (proc.exitCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await this.exited;
      clearTimeout(timer);
    }
    return /AddressSanitizer|LeakSanitizer|runtime error:/.test(this.log) ? -1 : proc.exitCode;
  }

  /** SIGKILL to the PID, as a crash; resolves once it has exited. */
  async kill() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Sends signal (SIGSTOP, SIGCONT) to the PID. */
  signal(signal) {
    this.proc.kill(signal);
  }

  /** POST /api/publish (with the server's WSFAN_API_KEY, when it has one); returns the parsed reply. */
  async publish(body) {
    const key = this.env.WSFAN_API_KEY;
    const res = await fetch(`${this.http}/api/publish`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify(body),
    });
    const reply = await res.json();
    if (res.status !== 200) throw new Error(`publish ${JSON.stringify(body)}: ${res.status} ${JSON.stringify(reply)}`);
    return reply;
  }
}

/** One redis-server on a free port, stopped by PID; without persistence
 * unless appendonly (then a restart keeps what was written). start() again
 * after kill() restarts it on the same port and directory. */
export class Redis {
  constructor({ appendonly = false } = {}) {
    this.appendonly = appendonly;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    if (!this.dir) this.dir = mkdtempSync(path.join(os.tmpdir(), 'wsfan-redis-'));
    this.proc = spawn('/usr/bin/redis-server', ['--port', String(this.port), '--bind', HOST, '--save', '',
      '--appendonly', this.appendonly ? 'yes' : 'no', '--daemonize', 'no', '--dir', this.dir], { stdio: 'ignore' });
    this.exited = once(this.proc, 'exit');
    await waitFor(async () => {
      if (this.proc.exitCode !== null) throw new Error(`redis-server on port ${this.port} exited with ${this.proc.exitCode}`);
      return this._ping();
    }, 10000, `redis-server on port ${this.port}`);
    return this;
  }

  get url() {
    return `redis://${HOST}:${this.port}`;
  }

  _ping() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, HOST, () => s.write('PING\r\n'));
      s.on('data', (d) => {
        s.destroy();
        resolve(String(d).startsWith('+PONG'));
      });
      s.on('error', () => resolve(false));
    });
  }

  /** SIGKILL to the PID, as a crash; resolves once it has exited. */
  async kill() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A TCP proxy in front of a port: cut() closes every connection, and
 * refuses new ones while paused; mute() swallows what the server sends. */
export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.paused = false;
    this.muted = false;
    this.server = net.createServer((client) => this._accept(client));
  }

  async start() {
    this.server.listen(0, HOST);
    await once(this.server, 'listening');
    this.port = this.server.address().port;
    return this;
  }

  get url() {
    return `ws://${HOST}:${this.port}/ws`;
  }

  _accept(client) {
    if (this.paused) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, HOST);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.on('data', (data) => this.muted || client.write(data));
  }

  /** From now until resume(), bytes from the server are dropped: a reply is lost on its way. */
  mute() {
    this.muted = true;
  }

  /** Drops every connection (as a network failure would) and refuses new ones until resume(). */
  cut() {
    this.paused = true;
    for (const s of this.sockets) s.destroy();
  }

  resume() {
    this.paused = false;
    this.muted = false;
  }

  async close() {
    this.cut();
    this.server.close();
    await once(this.server, 'close');
  }
}
