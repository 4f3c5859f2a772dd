// wsfan.js - the JavaScript client of wsfan (protocol: docs/protocol.md).
// One dependency-free ES module for browsers and Node. In Node without a
// global WebSocket, pass the `ws` package: connect(url, { WebSocket: (await import('ws')).default }).
//
// What it does for you:
// - every command returns a promise matched to its reply by `ref`;
//   an error reply rejects with a WsfanError carrying the protocol's code;
// - it reconnects by itself with exponential backoff and jitter, rejoins
//   every room with `since` = the last offset it saw, so that nothing
//   persisted is lost, and says so: each rejoin emits "rejoined" with
//   `recovered`, false when history no longer reaches back (refetch then);
// - commands issued while disconnected wait and go out after the rejoins;
// - every persisted publish carries an idempotency key and stays in an
//   outbox until its ack: after a reconnect (and the rejoin of its room) it
//   is sent again with the same key, so that it is in the room exactly once
//   even when the connection dropped between the server's receipt and the ack.
//   Ephemeral publishes are sent at most once: they are never resent.
//
// - with getToken (--auth jwt), it asks for a token at every (re)connect
//   and, before the token's exp, for a fresh one that it hands to the
//   server with `refresh`, so the connection is never closed for expiry.
// - when a WebSocket cannot open (fallbackAfter attempts in a row, or no
//   WebSocket at all), it falls back to server-sent events: an EventSource
//   on /sse with its rooms, resuming from its offsets; publishes then go
//   through publishVia (your backend) or, with apiKey, POST /api/publish.
//
//   const client = new WsfanClient('ws://127.0.0.1:8080/ws', { getToken: () => fetchToken() });
//   client.on('roomMessage', (m) => console.log(m.room, m.from, m.data));
//   await client.connect();          // resolves with the first welcome
//   await client.join('general');
//   await client.publish('general', { text: 'hi' });
//
// connect(url, options) does both steps: it returns the client, connecting.

const OPEN = 1; // readyState of an open WebSocket and of an open EventSource
const CLOSED = 2; // readyState of an EventSource that gave up reconnecting
const TRANSPORTS = ['websocket', 'sse'];
// The events of a /sse stream (docs/protocol.md section 8); "error" is
// handled apart, as EventSource also fires it for its own failures.
const STREAM_EVENTS = ['joined', 'message', 'presence_join', 'presence_leave', 'direct', 'broadcast'];
const SUBPROTOCOL = 'wsfan.v1';
// The client's events (wsfan.d.ts, ClientEvents): named apart from the DOM's
// open, close, error and message, so that no one mistakes one for the other.
const EVENTS = new Set(['connected', 'disconnected', 'reconnecting', 'fallback', 'rejoined', 'refreshed', 'state',
  'roomMessage', 'directMessage', 'broadcastMessage', 'presence', 'unknownEvent', 'failure']);
// Refusals that leave no effect behind and pass: the command is sent again.
const TRANSIENT = new Set(['unavailable', 'rate_limited']);

/** A refused command: `code` is the protocol's error code ("not_member", ...). */
export class WsfanError extends Error {
  constructor(code, message, reply) {
    super(message || code);
    this.name = 'WsfanError';
    this.code = code;
    this.reply = reply;
  }
}

/**
 * The wait before reconnect attempt `attempt` (0 for the first): an
 * exponential step, capped, of which a random half is jitter, so that
 * clients dropped together do not come back together.
 */
export function backoffDelay(attempt, min = 250, max = 10000, random = Math.random) {
  const step = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.round(step / 2 + random() * (step / 2));
}

/** 24 random hex digits: with a counter, the idempotency keys of one client. */
function randomHex() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function closedError() {
  return new WsfanError('closed', 'the client was closed');
}

function unsupportedError(what) {
  return new WsfanError('unsupported', `${what} is not possible over the SSE fallback: an event stream only receives`);
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new Error('wsfan: pass the server URL, e.g. ws://127.0.0.1:8080/ws');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

export class WsfanClient {
  /**
   * @param {string|undefined} url ws:// or wss:// URL of /ws (in a browser, defaults to this page's server)
   * @param {object} options see wsfan.d.ts
   */
  constructor(url, options = {}) {
    this.url = url || defaultUrl();
    this.options = {
      backoffMin: 250,
      backoffMax: 10000,
      timeout: 10000,
      outboxLimit: 1000,
      refreshBefore: 30000,
      transports: TRANSPORTS,
      fallbackAfter: 2,
      ...options,
    };
    const { transports, fallbackAfter, publishVia } = this.options;
    if (!Array.isArray(transports) || transports.length === 0 || transports.some((t) => !TRANSPORTS.includes(t))) {
      throw new TypeError(`wsfan: transports must be a non-empty array of ${TRANSPORTS.map((t) => `"${t}"`).join(', ')}`);
    }
    if (!Number.isInteger(fallbackAfter) || fallbackAfter < 1) {
      throw new TypeError('wsfan: fallbackAfter must be an integer of at least 1');
    }
    if (publishVia !== undefined && typeof publishVia !== 'function') {
      throw new TypeError('wsfan: publishVia must be a function ({room, data, key, ephemeral}) => Promise<{offset}>');
    }
    this.WebSocket = transports.includes('websocket') ? options.WebSocket || globalThis.WebSocket : null;
    this.EventSource = transports.includes('sse') ? options.EventSource || globalThis.EventSource : null;
    if (!this.WebSocket && !this.EventSource) {
      throw new Error(`wsfan: neither transport can open here (transports: ${transports.join(', ')}); `
        + 'in Node pass { WebSocket } from the "ws" package');
    }
    /** "websocket", or "sse" once it fell back (for the client's life). */
    this.transport = this.WebSocket ? 'websocket' : 'sse';
    this.socketFailures = 0; // WebSockets in a row that closed before their welcome
    this.everConnected = false;
    this.state = 'idle';
    this.welcome = null;
    this.socket = null; // the WebSocket, or the EventSource over SSE
    this.attempt = 0;
    this.nextRef = 1;
    this.pending = new Map(); // ref -> { command, resolve, reject }, sent on this socket
    this.queue = []; // commands other than persisted publishes, waiting for a connection
    this.outbox = new Set(); // persisted publishes until their ack, in the order of the calls
    this.keyPrefix = randomHex();
    this.nextKey = 1;
    this.rooms = new Map(); // room -> { offset, joined, wasJoined, retries, waiters: [{resolve, reject}] }
    this.listeners = new Map();
    this.lastRx = 0;
    this.heartbeatTimer = null;
    this.reconnectTimer = null;
    this.refreshTimer = null;
    this.closedByUser = false;
    this.connecting = null;
  }

  /**
   * Opens the connection (once; later calls return the same promise), and
   * keeps it open until close(). Resolves with the first welcome; rejects
   * only when the client is closed before one came.
   */
  connect() {
    if (!this.connecting) {
      this.connecting = new Promise((resolve, reject) => {
        this._firstWelcome = { resolve, reject };
      });
      this._setState('connecting');
      this._open();
    }
    return this.connecting;
  }

  // ---- events --------------------------------------------------------------

  /** Calls fn(event) for each event of type; returns a function that stops it. */
  on(type, fn) {
    if (!EVENTS.has(type)) {
      throw new TypeError(`wsfan: no event "${type}"; the client's events are ${[...EVENTS].join(', ')}`);
    }
    if (typeof fn !== 'function') throw new TypeError(`wsfan: on("${type}", fn) needs a function`);
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this.listeners.get(type);
    if (set) set.delete(fn);
  }

  /** The next event of type, as a promise. */
  once(type) {
    return new Promise((resolve) => {
      const stop = this.on(type, (ev) => {
        stop();
        resolve(ev);
      });
    });
  }

  _emit(type, ev) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(ev);
      } catch (err) {
        if (type !== 'failure') this._emit('failure', err);
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  // ---- the connection ---------------------------------------------------------

  // The token to present now: getToken (or a token function) is asked
  // again at every (re)connect, so that an expired token is never
  // presented twice.
  async _token() {
    const { getToken, token } = this.options;
    if (getToken) return getToken();
    return typeof token === 'function' ? token() : token;
  }

  _identify(u, token) {
    if (this.options.user) u.searchParams.set('user', this.options.user);
    if (token) u.searchParams.set('token', token);
    return u.toString();
  }

  /** The HTTP URL of path beside /ws (/sse, /api/publish), on the same server. */
  _httpUrl(path) {
    const u = new URL(path, this.url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    return u;
  }

  // The stream's URL: its rooms and, so that a reopened stream resumes
  // where the last one was, `since` with each room's last offset.
  _streamUrl(token) {
    const u = this._httpUrl('sse');
    const positions = [];
    for (const [room, entry] of this.rooms) {
      u.searchParams.append('room', room);
      if (entry.offset) positions.push(`${room}=${entry.offset}`);
    }
    if (positions.length) u.searchParams.set('since', positions.join(';'));
    return this._identify(u, token);
  }

  async _open() {
    try {
      const token = await this._token();
      if (this.closedByUser) return;
      if (this.transport === 'sse') this._openStream(token);
      else this._openSocket(token);
    } catch (err) {
      this._emit('failure', err);
      this._scheduleReconnect();
    }
  }

  _openSocket(token) {
    let socket;
    try {
      socket = new this.WebSocket(this._identify(new URL(this.url), token), [SUBPROTOCOL]);
    } catch (err) {
      this._socketFailed();
      throw err;
    }
    this.socket = socket;
    socket.welcomed = false;
    socket.onmessage = (ev) => {
      if (this.socket === socket) this._receive(ev.data);
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      if (!socket.welcomed) this._socketFailed();
      this._lost(ev.code, ev.reason);
    };
    socket.onerror = () => {
      // A close event always follows; it reconnects.
    };
  }

  // A WebSocket that closed before its welcome: after fallbackAfter in a
  // row before any welcome (a proxy that does not pass the upgrade, a
  // network that blocks it), the client switches to server-sent events for
  // good. Once a WebSocket has worked, a server restart is no reason to.
  _socketFailed() {
    if (this.everConnected) return;
    this.socketFailures++;
    if (this.EventSource && this.socketFailures >= this.options.fallbackAfter) {
      this.transport = 'sse';
      this.attempt = 0;
      this._emit('fallback', { transport: 'sse', attempts: this.socketFailures });
    }
  }

  // EventSource reconnects by itself after a drop, with Last-Event-ID, so
  // that the server resumes every room where the stream was. It gives up
  // (readyState CLOSED) only after a refusal (an expired token, a 503):
  // then the client opens a new stream, with a fresh token and `since`.
  _openStream(token) {
    const source = new this.EventSource(this._streamUrl(token));
    this.socket = source;
    source.onopen = () => {
      if (this.socket === source) this._ready(null);
    };
    for (const type of STREAM_EVENTS) {
      source.addEventListener(type, (ev) => {
        if (this.socket === source) this._receive(ev.data);
      });
    }
    source.addEventListener('error', (ev) => {
      if (this.socket !== source) return;
      if (ev.data) {
        this._receive(ev.data); // the server's error event
        return;
      }
      if (source.readyState === CLOSED) {
        // EventSource does not tell the status: 401, 403, 429, 503 all look alike.
        const reason = 'the server refused the event stream (a token, a room, a limit?)';
        this._emit('failure', new WsfanError('refused', reason));
        if (this.state === 'open') {
          this._lost(null, reason);
        } else {
          source.close();
          this.socket = null;
          this._scheduleReconnect();
        }
      } else if (this.state === 'open') {
        this._lost(null, 'the event stream dropped', { streamRetries: true });
      }
    });
  }

  /** Closes the stream and opens one for the current rooms (after a join or a leave). */
  _reopenStream() {
    if (this.reopenTimer || !this.socket) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.closedByUser || this.transport !== 'sse' || !this.socket) return;
      this.socket.close();
      this.socket = null;
      for (const entry of this.rooms.values()) entry.joined = false;
      this._open();
    }, 0);
  }

  _receive(data) {
    this.lastRx = Date.now();
    let ev;
    try {
      ev = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch (err) {
      this._emit('failure', new Error(`wsfan: a frame that is not JSON: ${String(data).slice(0, 80)}`));
      return;
    }
    if (ev.ref !== undefined && this.pending.has(ev.ref)) {
      const p = this.pending.get(ev.ref);
      this.pending.delete(ev.ref);
      if (ev.type === 'error') p.reject(new WsfanError(ev.code, ev.message, ev));
      else p.resolve(ev);
      return;
    }
    switch (ev.type) {
      case 'welcome':
        this.socket.welcomed = true;
        this.socketFailures = 0;
        this._welcomed(ev);
        break;
      case 'joined': {
        // Over SSE: the stream's join of one of its rooms.
        const entry = this.rooms.get(ev.room);
        if (entry) this._roomJoined(ev.room, entry, ev);
        break;
      }
      case 'message':
        this._noteOffset(ev.room, ev.offset);
        this._emit('roomMessage', ev);
        break;
      case 'direct':
        this._emit('directMessage', ev);
        break;
      case 'broadcast':
        this._emit('broadcastMessage', ev);
        break;
      case 'presence_join':
      case 'presence_leave':
        this._emit('presence', ev);
        break;
      case 'error':
        this._emit('failure', new WsfanError(ev.code, ev.message, ev));
        break;
      default:
        this._emit('unknownEvent', ev);
    }
  }

  _welcomed(welcome) {
    this._ready(welcome);
    this._startHeartbeat(welcome.heartbeat || 25);
    this._scheduleRefresh(welcome.exp);
    for (const [room, entry] of this.rooms) this._sendJoin(room, entry);
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) this._transmit(item);
    this._flushOutbox();
  }

  // Connected: a WebSocket's welcome, or an event stream that opened (welcome
  // null; its rooms are in its URL, and its joined events follow).
  _ready(welcome) {
    const reconnect = this.everConnected;
    this.everConnected = true;
    this.welcome = welcome;
    this.attempt = 0;
    this._setState('open');
    if (this._firstWelcome) {
      this._firstWelcome.resolve(welcome);
      this._firstWelcome = null;
    }
    this._emit('connected', { welcome, reconnect, transport: this.transport });
    if (this.transport === 'sse') {
      const queued = this.queue;
      this.queue = [];
      for (const item of queued) this._requestOverHttp(item.command).then(item.resolve, item.reject);
      this._flushOutbox();
    }
  }

  // streamRetries: an EventSource that reconnects by itself; the client
  // waits for it instead of opening a new connection.
  _lost(code, reason, { streamRetries = false } = {}) {
    if (!streamRetries) this.socket = null;
    this._stopHeartbeat();
    clearTimeout(this.refreshTimer);
    for (const p of this.pending.values()) {
      if (!this.outbox.has(p)) p.reject(new WsfanError('disconnected', 'the connection closed before the reply came'));
    }
    this.pending.clear();
    for (const item of this.outbox) item.ref = undefined; // sent again after the rejoin
    for (const entry of this.rooms.values()) entry.joined = false;
    const willReconnect = !this.closedByUser;
    this._emit('disconnected', { code, reason, willReconnect, transport: this.transport });
    if (!willReconnect) this._setState('closed');
    else if (streamRetries) this._setState('reconnecting');
    else this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this.closedByUser) return;
    const delay = backoffDelay(this.attempt, this.options.backoffMin, this.options.backoffMax);
    this.attempt++;
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: this.attempt, delay });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.closedByUser) this._open();
    }, delay);
  }

  // With getToken, a token that expires (exp, unix seconds) is swapped for
  // a fresh one refreshBefore ms ahead of its expiry, over this connection.
  _scheduleRefresh(exp) {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (!this.options.getToken || typeof exp !== 'number') return;
    const delay = Math.max(0, exp * 1000 - Date.now() - this.options.refreshBefore);
    this.refreshTimer = setTimeout(() => this._refresh(), delay);
  }

  async _refresh() {
    try {
      const token = await this.options.getToken();
      const reply = await this._request({ type: 'refresh', token });
      this._emit('refreshed', { exp: reply.exp });
      this._scheduleRefresh(reply.exp);
    } catch (err) {
      // The server closes the connection at expiry; the reconnect asks getToken again.
      this._emit('failure', err);
    }
  }

  // The server pings at the WebSocket level, which a browser never shows:
  // a quiet connection is checked with a ping command, and given up (then
  // reconnected) when nothing at all has come for two intervals.
  _startHeartbeat(seconds) {
    this._stopHeartbeat();
    const interval = seconds * 1000;
    this.lastRx = Date.now();
    this.heartbeatTimer = setInterval(() => {
      const quiet = Date.now() - this.lastRx;
      if (quiet > 2 * interval + 1000) {
        this._drop();
      } else if (quiet > interval) {
        this.ping().catch(() => {});
      }
    }, interval / 2);
    if (this.heartbeatTimer.unref) this.heartbeatTimer.unref();
  }

  _stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  /** Closes the socket as if the network had dropped it; reconnects. */
  _drop() {
    const socket = this.socket;
    if (!socket) return;
    try {
      socket.close(4000, 'no reply from the server');
    } catch (err) {
      // Already closing.
    }
    this._lost(1006, 'no reply from the server');
  }

  /** Closes for good: no reconnect; waiting commands and unacknowledged publishes are rejected. */
  close() {
    this.closedByUser = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    if (this._firstWelcome) {
      this._firstWelcome.reject(closedError());
      this._firstWelcome = null;
    }
    for (const item of this.queue) item.reject(closedError());
    this.queue = [];
    for (const item of this.outbox) item.fail(closedError());
    for (const entry of this.rooms.values()) {
      for (const w of entry.waiters) w.reject(closedError());
      entry.waiters = [];
    }
    clearTimeout(this.reopenTimer);
    if (this.socket && this.transport === 'websocket') {
      this.socket.close(1000, 'bye'); // its close event ends the rest
    } else if (this.socket) {
      this.socket.close();
      this._lost(null, 'closed by the client'); // an EventSource fires no event when closed
    } else {
      this._setState('closed');
    }
  }

  // ---- commands ---------------------------------------------------------------

  /** Sends command now when connected, else when the connection is back. */
  _request(command) {
    if (this.transport === 'sse' && !this.closedByUser) return this._requestOverHttp(command);
    return new Promise((resolve, reject) => {
      if (this.closedByUser) {
        reject(closedError());
        return;
      }
      const item = { command };
      const timer = setTimeout(() => {
        this.queue = this.queue.filter((x) => x !== item);
        this.pending.delete(item.ref);
        reject(new WsfanError('timeout', `no reply to ${command.type} within ${this.options.timeout} ms`));
      }, this.options.timeout);
      item.resolve = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
      item.reject = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      if (this._connected()) this._transmit(item);
      else this.queue.push(item);
    });
  }

  // A persisted publish stays in the outbox until its ack (or a refusal
  // that is not transient, or the timeout): it is sent once its room is
  // joined on the current connection, and again, with the same key, after
  // a reconnect or a transient refusal. Its promise settles once.
  _publishPersisted(command) {
    return new Promise((resolve, reject) => {
      if (this.closedByUser) {
        reject(closedError());
        return;
      }
      if (this.outbox.size >= this.options.outboxLimit) {
        reject(new WsfanError('outbox_full', `${this.outbox.size} publishes wait for their ack (outboxLimit)`));
        return;
      }
      const item = { command, sends: 0, hold: null };
      const settle = (done, value) => {
        clearTimeout(item.timer);
        clearTimeout(item.hold);
        this.outbox.delete(item);
        this.pending.delete(item.ref);
        done(value);
      };
      item.resolve = (ack) => settle(resolve, ack);
      item.fail = (err) => {
        err.key = command.key;
        settle(reject, err);
      };
      item.reject = (err) => {
        item.ref = undefined;
        if (!TRANSIENT.has(err.code)) {
          item.fail(err);
          return;
        }
        item.hold = setTimeout(() => {
          item.hold = null;
          this._flushOutbox();
        }, backoffDelay(item.sends - 1, this.options.backoffMin, this.options.backoffMax));
      };
      item.timer = setTimeout(
        () => item.fail(new WsfanError('timeout', `no ack to publish within ${this.options.timeout} ms`)),
        this.options.timeout,
      );
      this.outbox.add(item);
      this._flushOutbox();
    });
  }

  /** Sends the outbox's publishes that are not on the socket and whose room is joined. */
  _flushOutbox() {
    if (this.transport === 'sse') {
      this._flushOutboxOverHttp();
      return;
    }
    if (!this._connected()) return;
    for (const item of this.outbox) {
      const entry = this.rooms.get(item.command.room);
      if (item.ref === undefined && !item.hold && (!entry || entry.joined)) {
        item.sends++;
        this._transmit(item);
      }
    }
  }

  // Over SSE a publish needs no stream: each goes out over HTTP at once,
  // with its key, and again after a transient refusal or a network error.
  _flushOutboxOverHttp() {
    for (const item of this.outbox) {
      if (item.posting || item.hold) continue;
      item.posting = true;
      item.sends++;
      this._publishOverHttp(item.command).then(item.resolve, (err) => {
        item.posting = false;
        item.reject(err);
      });
    }
  }

  // publishVia (the app's backend) or, with apiKey, POST /api/publish;
  // else a clear refusal: a browser has no API key to give.
  async _publishOverHttp({ room, data, key, ephemeral }) {
    const { publishVia, apiKey } = this.options;
    let reply;
    if (publishVia) {
      reply = await publishVia({ room, data, key, ephemeral: Boolean(ephemeral) });
    } else if (apiKey) {
      reply = await this._api('POST', 'api/publish', { room, data, key, ephemeral: Boolean(ephemeral) });
    } else {
      throw new WsfanError('unsupported', 'publish over the SSE fallback needs the option publishVia '
        + '(a function that posts {room, data, key} to your backend, which publishes it) or, on a server, apiKey');
    }
    return { type: 'ack', offset: (reply && reply.offset) || null };
  }

  // history and presence over SSE: GET /api/... with apiKey.
  async _requestOverHttp(command) {
    if (!['history', 'presence'].includes(command.type)) throw unsupportedError(command.type);
    if (!this.options.apiKey) {
      throw new WsfanError('unsupported', `${command.type} over the SSE fallback needs apiKey (server side), `
        + 'or your backend asking GET /api/' + command.type);
    }
    const query = new URLSearchParams();
    for (const name of ['room', 'limit', 'before']) if (command[name] !== undefined) query.set(name, command[name]);
    return this._api('GET', `api/${command.type}?${query}`);
  }

  /** One call of the HTTP API; its JSON reply, or a WsfanError with its code. */
  async _api(method, path, body) {
    let res;
    try {
      res = await fetch(this._httpUrl(path), {
        method,
        headers: { Authorization: `Bearer ${this.options.apiKey}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      // The request may or may not have reached the server: transient, resent with its key.
      throw new WsfanError('unavailable', `${method} /${path.split('?')[0]} failed: ${err.message}`);
    }
    const reply = await res.json().catch(() => ({}));
    if (!res.ok) throw new WsfanError(reply.error || `http_${res.status}`, reply.message || res.statusText, reply);
    return reply;
  }

  _connected() {
    return this.socket && this.socket.readyState === OPEN && this.state === 'open';
  }

  _transmit(item) {
    item.ref = this.nextRef++;
    this.pending.set(item.ref, item);
    this.socket.send(JSON.stringify({ ...item.command, ref: item.ref }));
  }

  _noteOffset(room, offset) {
    const entry = this.rooms.get(room);
    if (entry && offset) entry.offset = offset;
  }

  // Joins room for entry; a room that was joined before on a lost
  // connection is a rejoin, reported with whether nothing was lost.
  _sendJoin(room, entry) {
    const rejoin = entry.wasJoined;
    const command = { type: 'join', room };
    if (entry.offset) command.since = entry.offset;
    const item = { command };
    item.resolve = (reply) => {
      if (this.rooms.get(room) === entry) this._roomJoined(room, entry, reply);
    };
    item.reject = (err) => {
      if (this.rooms.get(room) !== entry || err.code === 'disconnected') return; // retried on reconnect
      if (rejoin && TRANSIENT.has(err.code)) {
        // Redis is down for a moment: the room stays ours, asked again on this connection.
        const socket = this.socket;
        const delay = backoffDelay(entry.retries++, this.options.backoffMin, this.options.backoffMax);
        setTimeout(() => {
          if (this.socket === socket && this._connected() && this.rooms.get(room) === entry) this._sendJoin(room, entry);
        }, delay);
        return;
      }
      this.rooms.delete(room);
      for (const w of entry.waiters) w.reject(err);
      entry.waiters = [];
    };
    this._transmit(item);
  }

  // The joined reply of a join (WebSocket) or a stream's joined event (SSE).
  _roomJoined(room, entry, reply) {
    const rejoin = entry.wasJoined;
    // A replay brings the offset up to date message by message; without
    // one, the reply's offset is where live messages start.
    if (reply.offset && (!reply.recovered || reply.missed === 0)) entry.offset = reply.offset;
    entry.joined = true;
    entry.wasJoined = true;
    entry.retries = 0;
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const w of waiters) w.resolve(reply);
    if (rejoin) this._emit('rejoined', { room, recovered: reply.recovered, missed: reply.missed, offset: reply.offset });
    this._flushOutbox();
  }

  /**
   * Joins room and stays in it across reconnects. since: an offset to
   * replay from. Resolves with the joined reply ({offset, recovered,
   * missed}); the missed messages arrive as "roomMessage" events after it.
   */
  join(room, { since } = {}) {
    let entry = this.rooms.get(room);
    if (entry && entry.joined) return Promise.resolve({ type: 'joined', room, offset: entry.offset, recovered: true, missed: 0 });
    return new Promise((resolve, reject) => {
      if (this.closedByUser) {
        reject(closedError());
        return;
      }
      if (!entry) {
        entry = { offset: since || null, joined: false, wasJoined: false, retries: 0, waiters: [] };
        this.rooms.set(room, entry);
        if (this.transport === 'sse') this._reopenStream();
        else if (this._connected()) this._sendJoin(room, entry);
      }
      entry.waiters.push({ resolve, reject });
    });
  }

  /** Leaves room; it is not rejoined after a reconnect. */
  leave(room) {
    const entry = this.rooms.get(room);
    this.rooms.delete(room);
    if (entry) {
      for (const w of entry.waiters) w.reject(new WsfanError('left', `left ${room} before the join completed`));
    }
    if (this.transport === 'sse') {
      if (entry) this._reopenStream();
      return Promise.resolve({ type: 'left', room });
    }
    if (!this._connected()) return Promise.resolve({ type: 'left', room });
    return this._request({ type: 'leave', room });
  }

  /**
   * Publishes data to a room joined before. Resolves with the ack, {offset}
   * (null when ephemeral). A persisted publish carries key (by default a
   * new unique one) and is sent again until acknowledged, so it is in the
   * room once; an ephemeral one is sent at most once, and rejects with
   * "disconnected" when there is no connection or it drops before the ack.
   */
  publish(room, data, { ephemeral, echo, key } = {}) {
    const command = { type: 'publish', room, data };
    if (ephemeral !== undefined) command.ephemeral = ephemeral;
    if (echo !== undefined) command.echo = echo;
    if (ephemeral) {
      if (key !== undefined) command.key = key;
      if (this.transport === 'sse') return this._publishOverHttp(command);
      if (this._connected()) return this._request(command);
      return Promise.reject(new WsfanError('disconnected', 'an ephemeral publish is not kept for the reconnect'));
    }
    command.key = key !== undefined ? key : `${this.keyPrefix}-${this.nextKey++}`;
    return this._publishPersisted(command);
  }

  /** Sends data to every connection of user. */
  send(user, data) {
    return this._request({ type: 'send', user, data });
  }

  /** Sends data to every connection (needs the broadcast permission). */
  broadcast(data) {
    return this._request({ type: 'broadcast', data });
  }

  /** The last `limit` messages of room (before an offset), oldest first. */
  async history(room, { limit, before } = {}) {
    const command = { type: 'history', room };
    if (limit !== undefined) command.limit = limit;
    if (before !== undefined) command.before = before;
    return (await this._request(command)).messages;
  }

  /** The users in room: [{user, connections}]. */
  async presence(room) {
    return (await this._request({ type: 'presence', room })).users;
  }

  ping() {
    return this._request({ type: 'ping' });
  }
}

/** Creates a client and starts connecting; returns the client (its connect() promise is client.connecting). */
export function connect(url, options) {
  const client = new WsfanClient(url, options);
  client.connect().catch(() => {}); // a close before the first welcome is the caller's own doing
  return client;
}
