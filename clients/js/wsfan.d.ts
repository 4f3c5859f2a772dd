// wsfan.d.ts - TypeScript declarations of clients/js/wsfan.js.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Opaque, increasing within a room: "<ms>-<seq>". */
export type Offset = string;

export interface Welcome {
  type: 'welcome';
  session: string;
  user: string | null;
  node: string;
  heartbeat: number;
  /** With a token: its exp in unix seconds, or null for a token that never expires. */
  exp?: number | null;
}

export interface RoomMessage {
  type: 'message';
  room: string;
  /** Present only on persisted (not ephemeral) messages. */
  offset?: Offset;
  /** null when published by the server API or another service. */
  from: string | null;
  data: Json;
  ts: number;
}

export interface DirectMessage {
  type: 'direct' | 'broadcast';
  from: string | null;
  data: Json;
  ts: number;
}

export interface PresenceEvent {
  type: 'presence_join' | 'presence_leave';
  room: string;
  user: string;
  /** presence_join only: the joining connection's `info` claim, when its token has one. */
  info?: { [key: string]: Json };
}

export interface JoinedReply {
  type: 'joined';
  room: string;
  offset: Offset | null;
  /** false when `since` was given but history no longer reaches back: refetch. */
  recovered: boolean;
  missed: number;
}

export interface RejoinedEvent {
  room: string;
  /** false: messages may have been missed while disconnected; refetch history. */
  recovered: boolean;
  missed: number;
  offset: Offset | null;
}

export interface AckReply {
  type: 'ack';
  offset?: Offset | null;
}

export interface PresenceUser {
  user: string;
  connections: number;
  /** The `info` of the user's newest connection in the room, when it has one. */
  info?: { [key: string]: Json };
}

/** websocket: /ws. sse: the fallback, an EventSource on /sse (receiving only; see publishVia). */
export type Transport = 'websocket' | 'sse';

/** idle: created, connect() not called yet. */
export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** The client's events, named apart from the DOM's open, close, error and message: `client.on(name, fn)`
 * takes only these names (others throw a TypeError), and TypeScript checks fn's argument. */
export interface ClientEvents {
  /** Each welcome, or over SSE each time the stream opens (welcome null; a join or a leave reopens
   * the stream, and connected follows): the first has reconnect false. */
  connected: { welcome: Welcome | null; reconnect: boolean; transport: Transport };
  /** The connection closed; willReconnect is false only after close(). code: the WebSocket close
   * code, null over SSE (which has none). */
  disconnected: { code: number | null; reason: string; willReconnect: boolean; transport: Transport };
  reconnecting: { attempt: number; delay: number };
  /** No WebSocket opened in `attempts` tries in a row: from now on, server-sent events. */
  fallback: { transport: 'sse'; attempts: number };
  rejoined: RejoinedEvent;
  /** With getToken: the token was swapped for a fresh one before its exp (unix seconds, or null). */
  refreshed: { exp: number | null };
  state: ClientState;
  /** A message published to a joined room (the protocol's `message` event). */
  roomMessage: RoomMessage;
  /** A message to this connection's user (the protocol's `direct` event). */
  directMessage: DirectMessage;
  /** A message to every connection (the protocol's `broadcast` event). */
  broadcastMessage: DirectMessage;
  presence: PresenceEvent;
  /** Server events of types this client does not know. */
  unknownEvent: { type: string; [key: string]: Json };
  /** Something went wrong that no promise reports: an error event of the server, a frame that is
   * not JSON, a failed refresh, a listener that threw. */
  failure: Error;
}

export interface ClientOptions {
  /** With --auth none: the user id to connect as (?user=; the server trusts it: development only). */
  user?: string;
  /** With --auth jwt: a fixed token (?token=), or a function giving a fresh one at each (re)connect. */
  token?: string | (() => string | Promise<string>);
  /** With --auth jwt: asked for a token at every (re)connect and, refreshBefore ms before the
   * current token's exp, for a fresh one that the client hands over with `refresh`, so that the
   * connection is never closed for expiry. Takes precedence over token. */
  getToken?: () => string | Promise<string>;
  /** Milliseconds before a token's exp to refresh it (default 30000). */
  refreshBefore?: number;
  /** A WebSocket constructor; defaults to globalThis.WebSocket (in Node: pass the "ws" package's default export). */
  WebSocket?: unknown;
  /** The transports to use, in order (default ['websocket', 'sse']): the client starts with the first
   * that exists here and falls back to SSE after fallbackAfter WebSockets in a row close before their
   * welcome, before any has worked; it then stays on SSE. ['websocket'] never falls back. */
  transports?: Transport[];
  /** WebSockets in a row that must fail to open before the fallback (default 2). */
  fallbackAfter?: number;
  /** An EventSource constructor; defaults to globalThis.EventSource (browsers; Node 20 has none). */
  EventSource?: unknown;
  /** Over SSE: how a publish reaches the server, as the page cannot publish on an event stream.
   * Typically posts to your backend, which checks the user and calls POST /api/publish with the
   * same key (so a retry is never published twice); resolves with that reply's {offset}. A
   * rejection whose `code` is "unavailable" or "rate_limited" is retried with the same key. */
  publishVia?: (publish: { room: string; data: Json; key?: string; ephemeral: boolean }) => Promise<{ offset?: Offset | null }>;
  /** Over SSE, server side only (never in a page): the --api-key for POST /api/publish, GET
   * /api/history and /api/presence. */
  apiKey?: string;
  /** First reconnect wait in ms (default 250); doubles per attempt with jitter. */
  backoffMin?: number;
  /** Longest reconnect wait in ms (default 10000). */
  backoffMax?: number;
  /** Milliseconds a command may wait for its reply, connection included (default 10000). A persisted
   * publish is sent again until acknowledged within this time: keep it below the server's
   * --idempotency-window (default 300 s). */
  timeout?: number;
  /** Persisted publishes that may wait for their ack at once (default 1000); past it publish
   * rejects with "outbox_full". */
  outboxLimit?: number;
}

export interface PublishOptions {
  /** true: not stored, no offset, sent at most once (never resent; rejects with "disconnected"
   * when there is no connection or it drops before the ack). */
  ephemeral?: boolean;
  /** false: not delivered to this connection. */
  echo?: boolean;
  /** Idempotency key, at most 64 bytes (default: a new unique key for each persisted publish).
   * A persisted publish whose key was used in the room within --idempotency-window publishes
   * nothing new, and its ack carries the first one's offset. */
  key?: string;
}

/** A refused command; `code` is the protocol's error code, or "timeout", "disconnected", "closed",
 * "left", "outbox_full", "refused" (the failure event of an SSE stream the server refused), or
 * "unsupported" (over SSE: send, broadcast, ping, refresh; publish without
 * publishVia or apiKey; history and presence without apiKey). */
export class WsfanError extends Error {
  readonly code: string;
  readonly reply?: Json;
  /** On a rejected persisted publish: its idempotency key. It may still have reached the room;
   * publishing the same data with this key again cannot add it twice. */
  readonly key?: string;
}

export class WsfanClient {
  constructor(url?: string, options?: ClientOptions);
  readonly url: string;
  readonly state: ClientState;
  /** The transport in use now. */
  readonly transport: Transport;
  /** The last welcome (null before the first). */
  readonly welcome: Welcome | null;

  on<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): void;
  once<K extends keyof ClientEvents>(type: K): Promise<ClientEvents[K]>;

  /** Opens the connection (once; later calls return the same promise) and keeps it open, reconnecting,
   * until close(). Resolves with the first welcome (null when the first connection is SSE); rejects
   * ("closed") only when closed before one. Commands issued before it wait for the connection, and
   * rooms joined before it are in an SSE stream's first URL. */
  connect(): Promise<Welcome | null>;

  join(room: string, options?: { since?: Offset }): Promise<JoinedReply>;
  leave(room: string): Promise<{ type: 'left'; room: string }>;
  /** Resolves once with the ack of whichever attempt was answered. A persisted publish waits in
   * the outbox for its room's (re)join and is sent again, with the same key, after a reconnect or
   * an "unavailable" or "rate_limited" refusal; ephemeral ones are sent at most once. */
  publish(room: string, data: Json, options?: PublishOptions): Promise<AckReply>;
  send(user: string, data: Json): Promise<AckReply>;
  broadcast(data: Json): Promise<AckReply>;
  history(room: string, options?: { limit?: number; before?: Offset }): Promise<RoomMessage[]>;
  presence(room: string): Promise<PresenceUser[]>;
  ping(): Promise<{ type: 'pong' }>;
  /** Closes for good (no reconnect). */
  close(): void;
}

/** new WsfanClient(url, options) and its connect(), at once. In a browser, url defaults to this page's server. */
export function connect(url?: string, options?: ClientOptions): WsfanClient;

/** The wait before reconnect attempt `attempt` (0-based): min·2^attempt capped at max, half of it random. */
export function backoffDelay(attempt: number, min?: number, max?: number, random?: () => number): number;
