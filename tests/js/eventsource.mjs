// eventsource.mjs - a small EventSource for the Node tests (Node 20 has
// none), over fetch: the parts of the WHATWG EventSource that wsfan.js uses.
// It reconnects by itself after a network error or the end of the stream,
// with Last-Event-ID, after `retryMs`; an answer other than 200
// text/event-stream closes it for good (readyState CLOSED), as browsers do.
// `opened` counts the instances, so that a test sees who reconnected.

export class TestEventSource extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static opened = 0;
  static retryMs = 200;

  constructor(url) {
    super();
    TestEventSource.opened++;
    this.url = url;
    this.readyState = TestEventSource.CONNECTING;
    this.lastEventId = '';
    this.onopen = null;
    this.controller = null;
    this._connect();
  }

  close() {
    this.readyState = TestEventSource.CLOSED;
    if (this.controller) this.controller.abort();
  }

  _fire(type, init = {}) {
    const ev = new Event(type);
    Object.assign(ev, init);
    if (type === 'open' && this.onopen) this.onopen(ev);
    this.dispatchEvent(ev);
  }

  async _connect() {
    this.controller = new AbortController();
    const headers = { Accept: 'text/event-stream' };
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    let res;
    try {
      res = await fetch(this.url, { headers, signal: this.controller.signal });
    } catch {
      this._dropped();
      return;
    }
    if (this.readyState === TestEventSource.CLOSED) return;
    if (res.status !== 200 || !String(res.headers.get('content-type')).startsWith('text/event-stream')) {
      this.readyState = TestEventSource.CLOSED;
      await res.body?.cancel();
      this._fire('error');
      return;
    }
    this.readyState = TestEventSource.OPEN;
    this._fire('open');
    try {
      await this._read(res.body);
    } catch {
      // A reset connection: reconnect below.
    }
    this._dropped();
  }

  _dropped() {
    if (this.readyState === TestEventSource.CLOSED) return;
    this.readyState = TestEventSource.CONNECTING;
    this._fire('error');
    setTimeout(() => {
      if (this.readyState !== TestEventSource.CLOSED) this._connect();
    }, TestEventSource.retryMs);
  }

  // Blocks of "field: value" lines, each ended by an empty line.
  async _read(body) {
    const decoder = new TextDecoder();
    let buffer = '';
    let event = { type: 'message', data: [], id: null };
    for await (const chunk of body) {
      if (this.readyState === TestEventSource.CLOSED) return;
      buffer += decoder.decode(chunk, { stream: true });
      let newline;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line === '') {
          if (event.id !== null) this.lastEventId = event.id;
          if (event.data.length) this._fire(event.type, { data: event.data.join('\n'), lastEventId: this.lastEventId });
          event = { type: 'message', data: [], id: null };
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event.type = value;
          else if (field === 'data') event.data.push(value);
          else if (field === 'id') event.id = value;
        }
      }
    }
  }
}
