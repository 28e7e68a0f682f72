/* tornado-ws.js: the browser SDK of tornado-ws. One ES module, no dependencies, no build step.
 *
 *   import { connect } from "/static/tornado-ws.js";
 *   const conn = connect("ws://127.0.0.1:8888", { token: async () => fetchToken() });
 *   const room = conn.join("standup");
 *   room.on("message", (m) => show(m.user_id, m.data));
 *   const seq = await room.publish({ text: "hi" });
 *
 * One Connection is one WebSocket to GET /ws (docs/protocol.md, "One connection, many
 * sessions"); each Room is one session on it. The SDK keeps the guarantees of the Python client
 * (tornado_ws/client, docs/client.md), and this file is meant to be read by anyone porting them:
 *
 * - Each room's `message` stream is gapless and duplicate-free across reconnects: every (re)join
 *   sends the room's `since`/`epoch`, the server replays what was missed, and a frame whose `seq`
 *   was already delivered is dropped. A `welcome` with `recovered: false` says it could not be.
 * - `publish` gives every message an `id` and resolves with the `seq` of its `ack`. A message
 *   not acked yet (sent, or queued while disconnected) is sent again with the same id after every
 *   (re)join until it is, and the server applies an id once: exactly once.
 * - The connection reconnects with exponential backoff and full jitter, asks the `token`
 *   callable on every (re)connect and again before the token expires (the `refresh` frame),
 *   pings when the line is quiet (browsers hide WebSocket pings), and stops for good only on the
 *   close codes that mean "not with these credentials" (1002, 1007, 1008, 1009, 4003, 4004).
 *
 * Two state machines, each owning its timers:
 *
 *   Connection  connecting --connected--> open --drop--> reconnecting --connected--> open
 *               any --terminal close code, maxAttempts, close()--> closed
 *   Room        joining --welcome--> joined --drop, left 1011/1012/1013--> joining (rejoin)
 *               any --leave()--> leaving --left 1000--> closed
 *               any --left 1008/4003/4004, the connection closed--> closed
 *
 * Members whose name starts with "_" are internal: the Connection and its Rooms call them.
 */

/** Close codes after which the same credentials cannot succeed: stop, and say why. */
const TERMINAL_CLOSE = new Set([1002, 1007, 1008, 1009, 4003, 4004]);
/** `left` codes that end a room for good (others rejoin after the backoff). */
const TERMINAL_LEFT = new Set([1008, 4003, 4004]);
/** What the server accepts as a message id. */
const MESSAGE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** The defaults of every option of connect(); milliseconds. */
export const DEFAULTS = Object.freeze({
  /** Backoff: attempt n waits random() * min(backoffCap, backoffBase * 2 ** n). */
  backoffBase: 500,
  backoffCap: 15000,
  /** Consecutive failed attempts before the connection closes for good. */
  maxAttempts: Infinity,
  /** A connection that lived this long after `connected` resets the count of failed attempts. */
  stableAfter: 5000,
  /** After this long without a frame a `ping` goes out; without any frame pingTimeout later the
   * connection is dead. A dead line is noticed within pingInterval + pingTimeout (10 s). */
  pingInterval: 5000,
  pingTimeout: 5000,
  /** From asking for the token to the `connected` frame. */
  connectTimeout: 10000,
  /** A publish without an ack this long rejects (code "timeout"); keep it well under the
   * server's --idempotency-window (300 s by default), or a late resend could apply twice. */
  publishTimeout: 30000,
  /** Refresh the token when this fraction of its remaining life has passed. */
  refreshAt: 0.75,
});

/** A publish that will not be acknowledged: the server's `error` for its id, or "timeout". */
export class PublishError extends Error {
  constructor(code, message, id, session) {
    super(`message ${id} to ${session} refused (${code}): ${message}`);
    Object.assign(this, { name: "PublishError", code, id, session });
  }
}

/** A presence state the server refused ("state_too_large", "unavailable"): the state is the one before. */
export class PresenceError extends Error {
  constructor(code, message, session) {
    super(`presence state in ${session} refused (${code}): ${message}`);
    Object.assign(this, { name: "PresenceError", code, session });
  }
}

/** A room or a connection ended (code and reason as in its `state` event). */
export class ClosedError extends Error {
  constructor(code, reason, session = null) {
    super(`${session === null ? "connection" : `session ${session}`} closed (${code}): ${reason}`);
    Object.assign(this, { name: "ClosedError", code, reason, session });
  }
}

/** Open a connection to the hub at `url` (ws(s):// or http(s)://, with an optional prefix). */
export function connect(url, options) {
  return new Connection(url, options);
}

const now = () => performance.now();
const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
const isSeq = (value) => Number.isInteger(value) && value >= 0;
/** JSON with sorted keys: two states are the same state whatever the order of their keys. */
const canon = (value) =>
  JSON.stringify(value, (_, v) => (isObject(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]])) : v));

/** Listeners by type; `on` returns the function that removes the listener. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  on(type, fn) {
    if (typeof fn !== "function") throw new TypeError("on(type, fn): fn must be a function");
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    const entry = (value) => fn(value); // a wrapper: the same fn added twice is two listeners
    set.add(entry);
    return () => set.delete(entry);
  }

  _emit(type, value) {
    for (const fn of [...(this._listeners.get(type) || [])]) {
      try {
        fn(value);
      } catch (err) {
        // A failing listener must not break the state machine; the page still sees the error.
        if (typeof reportError === "function") reportError(err);
        else setTimeout(() => { throw err; });
      }
    }
  }

  /** Enter `state` and tell the "state" listeners (also when unchanged, if `always`). */
  _setState(state, details = {}, always = false) {
    if (this.state === state && !always) return;
    this.state = state;
    this._emit("state", { state, code: null, reason: "", ...details });
  }
}

/** The WebSocket URL of GET /ws from what a caller may pass. */
function endpoint(url) {
  const base = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  if (base.protocol === "http:") base.protocol = "ws:";
  if (base.protocol === "https:") base.protocol = "wss:";
  if (base.protocol !== "ws:" && base.protocol !== "wss:") throw new TypeError(`not a ws(s) or http(s) URL: ${url}`);
  base.pathname = base.pathname.replace(/\/+$/, "").replace(/\/ws$/, "") + "/ws";
  base.search = base.hash = "";
  return base.href;
}

/** The token's exp and iat (seconds) if it is a JWT we can read; we never verify it here. */
function tokenTimes(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
    return { exp: Number(claims.exp), iat: Number(claims.iat) };
  } catch {
    return { exp: NaN, iat: NaN };
  }
}

/** Ids unique across tabs and reloads without coordination: a random prefix and a counter. */
function idPrefix() {
  const bytes = new Uint8Array(9);
  if (globalThis.crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
}

// -- the connection ------------------------------------------------------------------------

export class Connection extends Emitter {
  constructor(url, options = {}) {
    super();
    if (options.token === undefined) throw new TypeError("connect(url, { token }): a token is required");
    this.url = endpoint(url);
    this.options = { ...DEFAULTS, ...options };
    /** "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "connecting";
    /** The current socket's `connected` frame, null while not open. */
    this.connected = null;
    /** The rooms joined and not closed, by session id. */
    this.rooms = new Map();
    /** Sockets opened so far (1 + reconnects). */
    this.attempts = 0;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._random = options.random || Math.random;
    this._ws = null;
    this._gen = 0; // bumps with every socket, so stale callbacks know they are stale
    this._failures = 0; // consecutive failed attempts: drives the backoff
    this._openedAt = 0;
    this._rxAt = 0; // when the last frame arrived
    this._pingAt = null; // when the unanswered ping went out
    this._timers = {}; // connect, beat, retry, refresh: one of each at most
    this._token = null; // the token of the current socket, and its times
    this._offered = null; // a refresh's token until the server answers `refreshed`
    this._ids = { prefix: idPrefix(), next: 1 };
    this._onOnline = () => this._online();
    this._onOffline = () => this._probe();
    if (typeof globalThis.addEventListener === "function") {
      globalThis.addEventListener("online", this._onOnline);
      globalThis.addEventListener("offline", this._onOffline);
    }
    this._open();
  }

  /** Join `session` on this connection; returns its Room at once (it joins when it can). */
  join(session, { since, epoch } = {}) {
    if (this.state === "closed") throw new ClosedError(this._closed.code, this._closed.reason);
    if (typeof session !== "string" || session === "") throw new TypeError("a session id is a non-empty string");
    if (this.rooms.has(session)) throw new Error(`already joined ${session} on this connection`);
    const room = new Room(this, session, since, epoch);
    this.rooms.set(session, room);
    if (this.state === "open") room._connectionUp();
    return room;
  }

  /** Close for good: every room closes (1000), publishes still waiting reject. */
  close(reason = "closed by the client") {
    if (this.state === "closed") return;
    const ws = this._ws;
    this._down();
    quietClose(ws, 1000, reason);
    this._end(1000, reason);
  }

  // -- internal: sockets -----------------------------------------------------

  async _open() {
    const gen = ++this._gen;
    // One deadline for the token, the handshake and the `connected` frame: a token service or a
    // network that never answers must not leave the connection "connecting" for ever.
    this._after("connect", this.options.connectTimeout, () => this._dead("connect timed out"));
    let token;
    try {
      const source = this.options.token;
      token = typeof source === "function" ? await source() : source;
      if (typeof token !== "string" || token === "") throw new Error("the token callable returned no token");
    } catch (err) {
      if (gen !== this._gen || this.state === "closed") return;
      this._clear("connect");
      this._failures += 1;
      this._retry(null, `no token: ${err && err.message}`);
      return;
    }
    if (gen !== this._gen || this.state === "closed") return;
    let ws;
    try {
      ws = new this._WebSocket(`${this.url}?token=${encodeURIComponent(token)}`);
    } catch (err) {
      this._end(null, `cannot open a WebSocket: ${err && err.message}`); // a bad URL stays bad
      return;
    }
    this.attempts += 1;
    this._ws = ws;
    this._token = { value: token, ...tokenTimes(token) };
    ws.onmessage = (event) => gen === this._gen && this._receive(event.data);
    ws.onclose = (event) => gen === this._gen && this._dropped(event.code, event.reason);
  }

  _receive(data) {
    this._rxAt = now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return this._protocolError("a frame is not JSON");
    }
    if (!isObject(frame) || typeof frame.type !== "string") return this._protocolError("a frame without a type");
    if (this.connected === null) {
      if (frame.type !== "connected" || typeof frame.user_id !== "string") {
        return this._protocolError("the first frame is not connected");
      }
      return this._up(frame);
    }
    if (typeof frame.session_id === "string") {
      const room = this.rooms.get(frame.session_id);
      return room && room._deliver(frame); // a room that ended may still get a frame or two
    }
    if (frame.type === "refreshed" && this._offered) {
      this._token = this._offered; // the server took it: its times drive the next refresh
      this._offered = null;
      this._refreshIn(frame.expires_at);
    }
    if (frame.type === "error" && frame.code === "bad_refresh") this._refreshIn(this.connected.expires_at, true);
    this._emit(frame.type, frame); // connection frames: pong, refreshed, error without a session
  }

  _up(frame) {
    this._clear("connect");
    this.connected = frame;
    this._openedAt = now();
    this._setState("open");
    this._emit("connected", frame);
    this._beat();
    this._refreshIn(frame.expires_at);
    for (const room of [...this.rooms.values()]) room._connectionUp();
  }

  /** The socket is gone (or we gave up on it): every membership went with it. */
  _down() {
    this._gen += 1;
    for (const name of Object.keys(this._timers)) this._clear(name);
    const ws = this._ws;
    this._ws = null;
    this._pingAt = null;
    this._offered = null;
    if (ws) ws.onmessage = ws.onclose = null;
    const wasUp = this.connected !== null;
    this.connected = null;
    if (wasUp) for (const room of [...this.rooms.values()]) room._connectionDown();
  }

  _dropped(code, reason) {
    const lived = this.connected !== null ? now() - this._openedAt : -1;
    this._down();
    if (TERMINAL_CLOSE.has(code)) return this._end(code, reason);
    if (lived >= this.options.stableAfter) this._failures = 0;
    else this._failures += 1;
    this._retry(code, reason);
  }

  /** We decide the socket is dead (no pong, no connected frame): do not wait for its close. */
  _dead(reason) {
    const ws = this._ws;
    if (ws) ws.onmessage = ws.onclose = null;
    quietClose(ws, 4000, reason);
    this._dropped(1006, reason);
  }

  _protocolError(why) {
    // Our server never sends such a frame: a wrong endpoint, a broken proxy or a hostile server.
    // Skipping it could hide a message (a gap); reconnecting would meet the same server.
    const ws = this._ws;
    this._down();
    quietClose(ws, 4002, "protocol error"); // browsers may not send 1002 themselves
    this._end(1002, `protocol error: ${why}`);
  }

  _retry(code, reason) {
    if (this._failures >= this.options.maxAttempts) {
      return this._end(code, `gave up after ${this._failures} attempts: ${reason}`);
    }
    const delay = this._backoff(this._failures);
    this._setState("reconnecting", { code, reason, delay, attempt: this._failures + 1 }, true);
    this._after("retry", delay, () => this._open());
  }

  /** Closed for good: every room ends with the same code and reason (seeing conn.state "closed"). */
  _end(code, reason) {
    this._down();
    this._closed = { code, reason };
    if (typeof globalThis.removeEventListener === "function") {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.removeEventListener("offline", this._onOffline);
    }
    this.state = "closed";
    for (const room of [...this.rooms.values()]) room._end(code, reason);
    this._emit("state", { state: "closed", code, reason });
  }

  // -- internal: timers --------------------------------------------------------

  _after(name, ms, fn) {
    this._clear(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, Math.min(Math.max(0, ms), 2 ** 31 - 1));
  }

  _clear(name) {
    clearTimeout(this._timers[name]);
    delete this._timers[name];
  }

  /** The heartbeat: a ping after pingInterval of silence, dead after pingTimeout more. */
  _beat() {
    const { pingInterval, pingTimeout } = this.options;
    if (this._pingAt !== null && this._rxAt <= this._pingAt) return this._dead("no answer to ping");
    this._pingAt = null;
    const quiet = now() - this._rxAt;
    if (quiet < pingInterval) return this._after("beat", pingInterval - quiet, () => this._beat());
    this._probe();
  }

  /** Ask the server for a frame now; no frame within pingTimeout and the socket is dead. */
  _probe() {
    if (this.state !== "open" || this._pingAt !== null) return;
    this._pingAt = now();
    this._send({ type: "ping" });
    this._after("beat", this.options.pingTimeout, () => this._beat());
  }

  /** The browser is back online: skip the rest of the backoff, or check that the socket lives. */
  _online() {
    if (this.state === "reconnecting" && this._timers.retry !== undefined) {
      this._clear("retry");
      this._open();
    } else {
      this._probe();
    }
  }

  /** Schedule the next `refresh` for a token that expires at `expiresAt` (seconds). */
  _refreshIn(expiresAt, failed = false) {
    this._clear("refresh");
    if (typeof this.options.token !== "function" || typeof expiresAt !== "number") return;
    // The JWT's own exp - iat bounds what is left of its life (a client clock behind the
    // server's would stretch it); a tenth of that life floors the wait (a clock ahead would
    // otherwise refresh in a loop). After a refused refresh: again at half of what is left.
    const { iat } = this._token;
    const life = Number.isFinite(iat) && iat < expiresAt ? expiresAt - iat : expiresAt - Date.now() / 1000;
    const left = Math.min(life, expiresAt - Date.now() / 1000);
    const share = failed ? 0.5 : this.options.refreshAt;
    const delay = Math.max(share * left, 0.1 * life, 0.1) * 1000;
    if (left <= 0 && failed) return; // it expires now: the 4001 close reconnects with a new one
    this._after("refresh", delay, () => this._refresh());
  }

  async _refresh() {
    const gen = this._gen;
    let token;
    try {
      token = await this.options.token();
      if (typeof token !== "string" || token === "") throw new Error("no token");
    } catch {
      if (gen === this._gen && this.connected) this._refreshIn(this.connected.expires_at, true);
      return;
    }
    if (gen !== this._gen || !this.connected) return;
    this._offered = { value: token, ...tokenTimes(token) };
    this._send({ type: "refresh", token });
  }

  // -- internal: for rooms -----------------------------------------------------

  /** Send one frame now; false if there is no open socket (the caller resends later). */
  _send(frame) {
    const ws = this._ws;
    if (!ws || this.connected === null || ws.readyState !== 1) return false;
    ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    return true;
  }

  _nextId() {
    return `${this._ids.prefix}.${this._ids.next++}`;
  }

  /** Full jitter: random() * min(cap, base * 2 ** failures); spreads a crowd of clients over the
   * whole window after a server restart. */
  _backoff(failures) {
    const ceiling = Math.min(this.options.backoffCap, this.options.backoffBase * 2 ** Math.min(failures, 30));
    return Math.round(this._random() * ceiling);
  }
}

// -- one session on the connection ------------------------------------------------------

export class Room extends Emitter {
  constructor(conn, session, since, epoch) {
    super();
    this.connection = conn;
    this.session = session;
    /** "joining" | "joined" | "leaving" | "closed" */
    this.state = "joining";
    /** The stream's position: every (re)join resumes from it. */
    this.epoch = Number.isInteger(since) && typeof epoch === "string" ? epoch : null;
    this.lastSeq = this.epoch !== null ? since : null;
    /** The latest welcome, and how many there were (one per (re)join). */
    this.welcome = null;
    this.welcomes = 0;
    /** From the latest welcome and presence frames (the welcome's list is the truth). */
    this.participantCount = 0;
    this.participantsTruncated = false;
    /** Why the room closed: {code, reason}, null while it is not closed. */
    this.closed = null;
    this._roster = new Map(); // user_id -> {user_id, name?, state?}
    this._pending = new Map(); // id -> a publish waiting for its ack, in publish order
    this._presence = new Presence(this);
    this._inSession = false; // a join (or the membership) exists on the current socket
    this._failures = 0; // consecutive rejoins refused with 1011/1012/1013
    this._welcomedAt = 0;
    this._timer = undefined; // the rejoin (or leave retry) after the backoff
    this._leaving = [];
  }

  /** The roster with presence states: [{user_id, name?, state?}], in arrival order. */
  get participants() {
    return [...this._roster.values()].map((p) => ({ ...p }));
  }

  /** This connection's state as last set and not refused (the one a rejoin sends), or null. */
  get presence() {
    const kept = this._presence.kept;
    return kept === null ? null : JSON.parse(JSON.stringify(kept.state));
  }

  /** Publishes waiting for their ack. */
  get unacked() {
    return this._pending.size;
  }

  /** Publish `data` once; resolves with its seq from the server's ack. */
  publish(data, { id, timeout = this.connection.options.publishTimeout } = {}) {
    const refuse = (err) => Promise.reject(err);
    if (this.state === "closed") return refuse(new ClosedError(this.closed.code, this.closed.reason, this.session));
    if (this.state === "leaving") return refuse(new ClosedError(1000, "left", this.session));
    if (data === undefined) return refuse(new TypeError("publish(data): data is required (null is a value)"));
    id = id === undefined ? this.connection._nextId() : id;
    if (typeof id !== "string" || !MESSAGE_ID.test(id)) return refuse(new TypeError("an id is 1-64 of [A-Za-z0-9._:-]"));
    if (this._pending.has(id)) return refuse(new TypeError(`message ${id} is already waiting for its ack`));
    let wire;
    try {
      wire = JSON.stringify({ type: "message", session: this.session, id, data }); // encoded once for every resend
    } catch (err) {
      return refuse(err); // a BigInt, a cycle
    }
    return new Promise((resolve, reject) => {
      const pending = { id, wire, resolve, reject, sentIn: null, timer: undefined };
      if (timeout > 0 && Number.isFinite(timeout)) {
        const late = new PublishError("timeout", "no ack in time: it may or may not have been published", id, this.session);
        pending.timer = setTimeout(() => this._settle(id, late), timeout);
      }
      this._pending.set(id, pending);
      if (this.state === "joined") this._sendPending(pending);
    });
  }

  /** An ephemeral frame for the session's other connections; false (dropped, never queued) unless joined. */
  signal(data, { key } = {}) {
    if (data === undefined) throw new TypeError("signal(data): data is required (null is a value)");
    if (key !== undefined && (typeof key !== "string" || key.length < 1 || key.length > 64)) {
      throw new TypeError("a signal key is a string of 1-64 characters");
    }
    const frame = { type: "signal", session: this.session, data };
    if (key !== undefined) frame.key = key;
    const wire = JSON.stringify(frame);
    return this.state === "joined" && this.connection._send(wire);
  }

  /** Set this connection's presence state here (an object): kept, and sent again after every
   * rejoin. Resolves once the server announced it, rejects with PresenceError if refused (a
   * caller may ignore the promise: that is not an unhandled rejection). */
  setPresence(state) {
    if (!isObject(state)) throw new TypeError("setPresence(state): state is an object");
    if (this.state === "closed" || this.state === "leaving") {
      const closed = this.closed || { code: 1000, reason: "left" };
      return handled(Promise.reject(new ClosedError(closed.code, closed.reason, this.session)));
    }
    return this._presence.set(JSON.parse(JSON.stringify(state))); // as the server will echo it
  }

  /** Leave the session; resolves once the server confirmed (or at once without a connection). */
  leave() {
    if (this.state === "closed") return Promise.resolve();
    const done = new Promise((resolve) => this._leaving.push(resolve));
    if (this.state !== "leaving") {
      clearTimeout(this._timer);
      this._timer = undefined;
      if (this._inSession && this.connection._send({ type: "leave", session: this.session })) this._setState("leaving");
      else this._end(1000, "left");
    }
    return done;
  }

  // -- internal: driven by the connection -----------------------------------------

  _connectionUp() {
    if (this.state !== "joining" || this._timer !== undefined) return; // a rejoin waits for its backoff
    const frame = { type: "join", session: this.session };
    if (this.epoch !== null && this.lastSeq !== null) Object.assign(frame, { since: this.lastSeq, epoch: this.epoch });
    this._inSession = this.connection._send(frame);
  }

  _connectionDown() {
    this._inSession = false;
    this._presence.down();
    for (const pending of this._pending.values()) pending.sentIn = null;
    if (this.state === "leaving") this._end(1000, "left"); // nothing left to leave
    else if (this.state === "joined") this._setState("joining");
  }

  _deliver(frame) {
    switch (frame.type) {
      case "welcome":
        if (!isSeq(frame.seq) || typeof frame.epoch !== "string") {
          return this.connection._protocolError("a welcome without seq and epoch");
        }
        return this._welcomed(frame);
      case "message":
        if (isSeq(frame.seq) && this.lastSeq !== null) {
          if (frame.seq <= this.lastSeq) return; // delivered before the drop
          this.lastSeq = frame.seq;
        }
        break;
      case "ack":
        if (!isSeq(frame.seq)) return this.connection._protocolError("an ack without seq");
        this._settle(frame.id, null, frame.seq);
        break;
      case "error":
        this._refused(frame);
        break;
      case "user_joined":
        this._roster.set(frame.user_id, { ...this._roster.get(frame.user_id), user_id: frame.user_id });
        if (frame.name !== undefined) this._roster.get(frame.user_id).name = frame.name;
        this._count(frame);
        break;
      case "user_left":
        this._roster.delete(frame.user_id);
        this._count(frame);
        break;
      case "presence_state": {
        const entry = this._roster.get(frame.user_id) || { user_id: frame.user_id };
        if (isObject(frame.state)) entry.state = frame.state;
        else delete entry.state;
        this._roster.set(frame.user_id, entry);
        this._presence.echo(frame);
        break;
      }
      case "presence_summary": {
        const left = frame.left || [];
        const joined = frame.joined || [];
        for (const user of left) this._roster.delete(user);
        for (const user of joined) if (!this._roster.has(user)) this._roster.set(user, { user_id: user });
        // A summary lists at most 100 users each way: a full list may have left some out.
        if (left.length >= 100 || joined.length >= 100) this.participantsTruncated = true;
        this._count(frame);
        break;
      }
      case "left":
        this._emitFrame(frame);
        return this._left(frame);
    }
    this._emitFrame(frame);
  }

  _welcomed(welcome) {
    this.welcome = welcome;
    this.welcomes += 1;
    this._welcomedAt = now();
    if (!(welcome.recovered && welcome.epoch === this.epoch)) {
      this.epoch = welcome.epoch; // a new start: live frames follow its seq
      this.lastSeq = welcome.seq;
    } // else: the replay follows, and lastSeq advances with it
    this._roster = new Map((welcome.participants || []).map((p) => [p.user_id, { ...p }]));
    this.participantsTruncated = welcome.participants_truncated === true;
    this._count(welcome);
    if (this.state === "joining") {
      // Resend before anything the page does on the welcome, so the publish order holds.
      this.state = "joined";
      this._presence.welcomed(welcome.user_id);
      for (const pending of [...this._pending.values()]) this._sendPending(pending);
      this._emit("state", { state: "joined", code: null, reason: "" });
    }
    this._emitFrame(welcome);
  }

  _left(frame) {
    const code = Number.isInteger(frame.code) ? frame.code : null;
    const reason = String(frame.reason || "");
    this._inSession = false;
    this._presence.down();
    if (this.state === "leaving" || TERMINAL_LEFT.has(code)) return this._end(code, reason);
    // 1011, 1012, 1013: the membership may come back; rejoin after this room's own backoff.
    if (this.state === "joined" && now() - this._welcomedAt >= this.connection.options.stableAfter) this._failures = 0;
    this._setState("joining", { code, reason }, true); // said even when the join itself was refused
    this._retryLater();
  }

  _retryLater() {
    this._failures += 1;
    if (this._failures >= this.connection.options.maxAttempts) {
      return this._end(null, `gave up after ${this._failures} attempts`);
    }
    for (const pending of this._pending.values()) pending.sentIn = null;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = undefined;
      if (this.state === "joining" && this.connection.state === "open") this._connectionUp();
      else if (this.state === "leaving") this.connection._send({ type: "leave", session: this.session });
    }, this.connection._backoff(this._failures - 1));
  }

  _refused(frame) {
    const pending = typeof frame.id === "string" ? this._pending.get(frame.id) : undefined;
    if (pending && frame.code === "not_joined") {
      pending.sentIn = null; // it met the end of a membership: again after the next welcome
    } else if (pending) {
      this._settle(frame.id, new PublishError(String(frame.code), String(frame.message || ""), frame.id, this.session));
    } else if (frame.code === "rate_limited" && frame.id === undefined && this._inSession && this.state !== "joined") {
      this._inSession = this.state === "leaving"; // the join budget dropped our join or leave: again later
      this._retryLater();
    } else if (frame.id === undefined) {
      this._presence.error(frame); // maybe the answer to our presence frame
    }
  }

  _sendPending(pending) {
    if (pending.sentIn === this.welcomes) return; // once per membership
    if (this.connection._send(pending.wire)) pending.sentIn = this.welcomes;
  }

  /** A publish is over: resolved with its seq, or rejected with `error`. */
  _settle(id, error, seq) {
    const pending = this._pending.get(id);
    if (!pending) return;
    this._pending.delete(id);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(seq);
  }

  _count(frame) {
    if (Number.isInteger(frame.participant_count)) this.participantCount = frame.participant_count;
  }

  _emitFrame(frame) {
    this._emit(frame.type, frame);
    this._emit("*", frame);
  }

  _end(code, reason) {
    if (this.state === "closed") return;
    clearTimeout(this._timer);
    this._timer = undefined;
    this._inSession = false;
    this.closed = { code, reason };
    if (this.connection.rooms.get(this.session) === this) this.connection.rooms.delete(this.session);
    for (const id of [...this._pending.keys()]) this._settle(id, new ClosedError(code, reason, this.session));
    this._presence.end(new ClosedError(code, reason, this.session));
    this._setState("closed", { code, reason });
    for (const resolve of this._leaving.splice(0)) resolve();
  }
}

// -- presence state -------------------------------------------------------------------------

/** This connection's presence state in one room, kept across reconnects (the rules of the Python
 * client's tornado_ws/client/presence.py). The server answers nothing to a `presence` frame that
 * succeeds: every member, this connection included, gets the user's `presence_state` (at most one
 * per 50 ms). That echo confirms it; an `error` state_too_large or unavailable (without id)
 * refuses it. Neither names the frame it answers, so at most one `presence` frame is on its way:
 * a newer state waits for the answer and replaces any state still waiting, as the server's own
 * coalescing would. The server drops the state with the membership: it is sent after every welcome. */
class Presence {
  constructor(room) {
    this.room = room;
    this.kept = null; // the latest state not refused
    this.accepted = null; // the latest the server announced as ours: what a refusal goes back to
    this.next = null; // waiting for the answer to `flight`
    this.flight = null; // sent, not answered
    this.user = null; // our user id, from the welcome
    this.live = false;
    this.retry = undefined;
    this.retries = 0;
  }

  set(state) {
    const update = { state, waiters: [] };
    const done = handled(new Promise((resolve, reject) => update.waiters.push({ resolve, reject })));
    if (this.next) settle(this.next, null); // replaced before it was sent: the latest wins
    this.next = this.kept = update;
    this.pump();
    return done;
  }

  welcomed(userId) {
    this.user = userId;
    this.live = true;
    this.cancel();
    const flight = this.flight;
    this.flight = null;
    if (this.next === null) this.next = this.kept; // the one on its way (still awaited), or the kept one
    else if (flight !== null) settle(flight, null); // a newer state replaces it
    this.pump();
  }

  down() {
    this.live = false;
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  /** A presence_state of the room: ours answers the state on its way. */
  echo(frame) {
    const flight = this.flight;
    if (flight === null || frame.user_id !== this.user || !isObject(frame.state)) return;
    // Another state is another connection of the same user, updated since: ours is set all the same.
    if (canon(frame.state) === canon(flight.state)) this.accepted = flight;
    this.flight = null;
    this.retries = 0;
    this.cancel();
    settle(flight, null);
    this.pump();
  }

  /** An error of the room without an id: maybe the answer to the state on its way. */
  error(frame) {
    if (frame.code === "rate_limited") {
      // Dropped over --rate-limit (or a signal was: the error does not say); sending the latest
      // state again is harmless, losing it is not.
      if (this.flight !== null && this.live && this.retry === undefined) {
        this.retry = setTimeout(() => this.resend(), this.room.connection._backoff(this.retries++));
      }
      return;
    }
    if (frame.code !== "state_too_large" && frame.code !== "unavailable") return;
    const flight = this.flight;
    this.flight = null;
    if (this.next === null) this.kept = this.accepted; // the server keeps the state it had
    if (flight !== null) settle(flight, new PresenceError(frame.code, String(frame.message || ""), this.room.session));
    this.pump();
  }

  end(error) {
    this.down();
    for (const update of [this.flight, this.next]) if (update !== null) settle(update, error);
    this.flight = this.next = null;
  }

  pump() {
    if (!this.live || this.flight !== null || this.next === null) return;
    if (this.send(this.next)) [this.flight, this.next] = [this.next, null];
  }

  resend() {
    this.retry = undefined;
    const flight = this.flight;
    if (flight === null || !this.live) return;
    if (this.next === null) return void this.send(flight);
    this.flight = null;
    settle(flight, null); // a newer state replaces it
    this.pump();
  }

  send(update) {
    return this.room.connection._send({ type: "presence", session: this.room.session, state: update.state });
  }

  cancel() {
    clearTimeout(this.retry);
    this.retry = undefined;
  }
}

function settle(update, error) {
  for (const { resolve, reject } of update.waiters.splice(0)) {
    if (error) reject(error);
    else resolve();
  }
}

/** A promise whose rejection nobody has to handle (the caller still sees it if it awaits). */
function handled(promise) {
  promise.catch(() => {});
  return promise;
}

/** Close a socket we no longer listen to (a close code browsers allow: 1000 or 3000-4999). */
function quietClose(ws, code, reason) {
  try {
    if (ws) ws.close(code, String(reason).slice(0, 60));
  } catch {
    // closing already
  }
}
