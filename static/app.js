/* tornado-ws demo page, built on the browser SDK like any page would be (docs/demo.md).
 *
 * One connection (conn), several sessions on it (one Room each, shown as a tab and a panel);
 * typing indicators and a status from presence state; live cursors from keyed signals and
 * reactions from keyless ones; the connection's state and what each reconnect recovered.
 * The page's CSP forbids inline script: everything lives here. Whatever a user or a peer typed
 * (names, messages, states, signals, session ids) reaches the page through textContent only.
 */
import { connect } from "./tornado-ws.js";

// -- facts --------------------------------------------------------------------------------

const CLOSE_MEANINGS = {
  1000: "normal closure",
  1001: "server going away",
  1002: "protocol error",
  1006: "connection lost",
  1007: "invalid UTF-8",
  1008: "policy violation",
  1009: "message too big",
  1011: "internal server error",
  1012: "session stream restarted",
  1013: "try again later",
  4001: "token expired",
  4003: "removed from the session",
  4004: "forbidden in this session",
  4008: "slow consumer",
};
const MAX_LOG_ENTRIES = 500;
const TYPING_IDLE_MS = 3000;
const CURSOR_EVERY_MS = 50; // 20 signals a second at most, well under --signal-rate
const CURSOR_STALE_MS = 8000;
const REACTION_MS = 2400;
/** Message ids unique to this page load (another tab of the same user has its own). */
const PAGE_ID = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
let counter = 0;

function describe(code, reason) {
  if (code === null || code === undefined) return reason || "no reason given";
  const meaning = CLOSE_MEANINGS[code] || (code >= 4000 ? "application close" : "closed");
  return `${code} ${meaning}` + (reason && reason !== meaning ? `: ${reason}` : "");
}

// -- DOM helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** createElement with a class and text content (never HTML). */
function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clone(templateId) {
  return $(templateId).content.firstElementChild.cloneNode(true);
}

function hue(text) {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
  return h;
}

function avatar(userId, label) {
  const span = make("span", "avatar", Array.from(label.trim() || "?")[0].toUpperCase());
  span.style.setProperty("--hue", String(hue(userId)));
  span.setAttribute("aria-hidden", "true");
  return span;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

const el = {
  mode: $("mode"),
  status: $("status"),
  statusText: $("status-text"),
  disconnect: $("disconnect"),
  joinView: $("join-view"),
  joinHint: $("join-hint"),
  joinForm: $("join-form"),
  joinError: $("join-error"),
  identity: $("identity-fields"),
  name: $("name"),
  org: $("org"),
  sessions: $("sessions"),
  tokenField: $("token-field"),
  token: $("token"),
  tokenNote: $("token-note"),
  tokenToggle: $("token-toggle"),
  connect: $("connect"),
  appView: $("app-view"),
  whoami: $("whoami"),
  tabs: $("tabs"),
  panels: $("panels"),
  addForm: $("add-form"),
  addSession: $("add-session"),
  myStatus: $("my-status"),
};

// -- page state ------------------------------------------------------------------------------

const page = {
  demo: null, // true / false once the server answered, null while unknown
  conn: null,
  me: null, // our user id, from the connected frame
  views: new Map(), // session id -> RoomView
  active: null, // the RoomView shown
  wasOpen: false, // the connection was open before this reconnecting spell
};

function setStatus(kind, text) {
  el.status.dataset.state = kind;
  el.statusText.textContent = text;
  const where = page.active ? `${page.active.session} · ` : "";
  document.title = (kind === "live" ? "" : `(${kind}) `) + where + "tornado-ws demo";
}

function myStatus() {
  return el.myStatus.value.trim().slice(0, 60);
}

// -- one session: a tab and a panel --------------------------------------------------------------

class RoomView {
  constructor(room) {
    this.room = room;
    this.session = room.session;
    this.tab = clone("tab-template");
    this.panel = clone("panel-template");
    const q = (selector) => this.panel.querySelector(selector);
    this.log = q(".log");
    this.people = q(".participants");
    this.count = q(".count");
    this.typingLine = q(".typing");
    this.stateText = q(".room-state");
    this.conversation = q(".conversation");
    this.overlay = q(".overlay");
    this.composer = q(".composer");
    this.input = q("input[name=message]");
    this.leaveButton = q(".leave");
    this.unread = 0;
    this.shownSeq = null; // the last seq on screen: what a resume recovered is counted from
    this.roster = new Map(); // the previous roster, to tell who came and went during a drop
    this.typing = false;
    this.typingTimer = undefined;
    this.cursors = new Map(); // user_id -> {node, timer}
    this.cursorAt = 0;
    this.cursorTimer = undefined;
    this.pending = new Map(); // our message id -> its "sending…" entry, until its copy arrives
    this.refusedFor = null; // the left code of a rejoin under way, said once

    const id = `room-${++counter}`;
    this.tab.id = `${id}-tab`;
    this.panel.id = id;
    this.tab.setAttribute("aria-controls", id);
    this.panel.setAttribute("aria-labelledby", this.tab.id);
    this.tab.querySelector(".tab-name").textContent = this.session;
    this.tab.title = this.session;
    q(".where-session").textContent = this.session;
    this.tab.addEventListener("click", () => show(this));
    el.tabs.appendChild(this.tab);
    el.panels.appendChild(this.panel);

    this.wire();
    this.setState("joining");
  }

  wire() {
    const room = this.room;
    room.on("welcome", (frame) => this.onWelcome(frame));
    room.on("message", (frame) => this.onMessage(frame));
    room.on("user_joined", (frame) => {
      this.system(`${this.nameOf(frame.user_id, frame.name)} joined`, "join");
      this.renderPeople();
    });
    room.on("user_left", (frame) => {
      this.system(`${this.nameOf(frame.user_id, frame.name)} left`, "leave");
      this.dropCursor(frame.user_id);
      this.renderPeople();
    });
    room.on("presence_state", () => this.renderPeople());
    room.on("presence_summary", () => this.renderPeople());
    room.on("signal", (frame) => this.onSignal(frame));
    room.on("error", (frame) => {
      if (frame.id === undefined) this.system(`The server refused a frame: ${frame.code} (${frame.message})`, "warn");
      // (an error with an id refused one of our messages: its entry says so)
    });
    room.on("state", (event) => this.onState(event));

    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener("input", () => this.typed());
    this.composer.querySelectorAll(".react").forEach((button) => {
      button.addEventListener("click", () => this.react(button.dataset.reaction));
    });
    this.leaveButton.addEventListener("click", () => this.leave());
    this.conversation.addEventListener("pointermove", (event) => this.pointer(event));
    this.conversation.addEventListener("pointerleave", () => this.room.signal({ gone: true }, { key: "cursor" }));
  }

  // -- server frames --------------------------------------------------------------------

  onWelcome(frame) {
    const first = this.room.welcomes === 1;
    const before = this.roster;
    if (first) {
      const others = frame.participant_count - 1;
      this.system(
        `You joined ${frame.session_id} as ${this.nameOf(frame.user_id)}` +
          (others > 0 ? ` · ${plural(others, "other person", "other people")} here` : " · nobody else here yet"),
      );
    } else {
      // The welcome's roster is the truth after a gap: say who came and went meanwhile.
      const now = new Map(this.room.participants.map((p) => [p.user_id, p.name || p.user_id]));
      before.forEach((name, uid) => {
        if (!now.has(uid)) this.system(`${name} left`, "leave");
      });
      now.forEach((name, uid) => {
        if (!before.has(uid)) this.system(`${name} joined`, "join");
      });
      if (frame.recovered) {
        const missed = Math.max(0, frame.seq - (this.shownSeq ?? frame.seq));
        this.system(`Back: recovered ${plural(missed, "missed message", "missed messages")}`, "ok");
      } else {
        this.system(
          "Back, but the messages sent while you were away could not be recovered (the server no longer " +
            `has them): new messages continue after #${frame.seq}`,
          "warn",
        );
      }
    }
    if (!frame.recovered) this.shownSeq = frame.seq;
    this.renderPeople();
  }

  onMessage(frame) {
    const entry = this.pending.get(frame.id);
    if (entry && frame.user_id === page.me) {
      this.pending.delete(frame.id);
      entry.remove();
    }
    this.shownSeq = frame.seq;
    this.append(this.messageEntry(frame));
    if (page.active !== this) this.setUnread(this.unread + 1);
  }

  onSignal(frame) {
    const data = frame.data;
    if (frame.key === "cursor" && data && typeof data === "object") {
      if (data.gone) return this.dropCursor(frame.user_id);
      const x = Number(data.x);
      const y = Number(data.y);
      const clamp = (v) => Math.min(1, Math.max(0, v));
      if (Number.isFinite(x) && Number.isFinite(y)) this.showCursor(frame, clamp(x), clamp(y));
    } else if (frame.key === undefined && data && typeof data.reaction === "string") {
      this.bubble(this.nameOf(frame.user_id, frame.name), data.reaction.slice(0, 40));
    }
  }

  onState(event) {
    this.setState(event.state);
    if (event.state === "joined") {
      this.refusedFor = null;
    } else if (event.state === "joining" && event.code !== null && this.refusedFor !== event.code) {
      // The server ended (or refused) this membership for now (1011, 1012, 1013): the SDK rejoins
      // by itself, after a backoff. Said once, not on every refused try.
      this.refusedFor = event.code;
      this.system(`The server ended this session for now (${describe(event.code, event.reason)}); rejoining…`, "warn");
    } else if (event.state === "closed") {
      this.stopTyping(false);
      this.cursors.forEach((_, uid) => this.dropCursor(uid));
      if (event.code === 1000 && event.reason === "left") return;
      if (page.conn && page.conn.state === "closed") {
        this.system(`Disconnected: ${describe(event.code, event.reason)}. Not reconnecting.`, "error");
      } else {
        const what = event.code === 1008 ? "Refused" : "This session ended";
        this.system(`${what}: ${describe(event.code, event.reason)}. Not rejoining.`, "error");
      }
      this.leaveButton.textContent = "Close";
    }
  }

  // -- what the user does --------------------------------------------------------------------

  send() {
    const text = this.input.value.trim();
    if (!text || this.room.state === "closed" || this.room.state === "leaving") return;
    this.input.value = "";
    this.stopTyping(true);
    // Our own id, so the "sending…" entry can be matched with the message when it comes back.
    const id = `${PAGE_ID}.${++counter}`;
    const entry = this.messageEntry({ user_id: page.me, data: { text }, seq: null, ts: Date.now() / 1000 });
    entry.classList.add("pending");
    entry.querySelector(".seq").textContent = page.conn.state === "open" ? "sending…" : "queued: sent once reconnected";
    this.pending.set(id, entry);
    this.append(entry);
    this.room.publish({ text }, { id }).then(
      (seq) => {
        entry.classList.remove("pending");
        entry.querySelector(".seq").textContent = `#${seq}`;
      },
      (err) => {
        this.pending.delete(id);
        entry.classList.replace("pending", "failed");
        entry.querySelector(".seq").textContent = `not sent: ${err.code ?? err.message}`;
      },
    );
    this.input.focus();
  }

  typed() {
    clearTimeout(this.typingTimer);
    if (!this.input.value.trim()) return this.stopTyping(true);
    if (!this.typing) {
      this.typing = true;
      this.publishPresence();
    }
    this.typingTimer = setTimeout(() => this.stopTyping(true), TYPING_IDLE_MS);
  }

  stopTyping(tell) {
    clearTimeout(this.typingTimer);
    if (!this.typing) return;
    this.typing = false;
    if (tell) this.publishPresence();
  }

  publishPresence() {
    if (this.room.state === "closed") return;
    const state = { typing: this.typing };
    if (myStatus()) state.status = myStatus();
    this.room.setPresence(state);
  }

  pointer(event) {
    if (this.room.state !== "joined" || event.pointerType === "touch") return;
    const box = this.conversation.getBoundingClientRect();
    const spot = {
      x: Math.round(((event.clientX - box.left) / box.width) * 1000) / 1000,
      y: Math.round(((event.clientY - box.top) / box.height) * 1000) / 1000,
    };
    // At most one cursor signal per CURSOR_EVERY_MS, the last position always sent.
    clearTimeout(this.cursorTimer);
    const wait = this.cursorAt + CURSOR_EVERY_MS - performance.now();
    const sendIt = () => {
      this.cursorAt = performance.now();
      this.room.signal(spot, { key: "cursor" });
    };
    if (wait <= 0) sendIt();
    else this.cursorTimer = setTimeout(sendIt, wait);
  }

  react(reaction) {
    if (this.room.signal({ reaction }) || this.room.state === "joined") this.bubble("you", reaction);
  }

  leave() {
    if (this.room.state !== "closed") {
      this.room.leave();
    }
    this.destroy();
  }

  // -- rendering -----------------------------------------------------------------------------

  setState(state) {
    const words = { joining: "joining…", joined: "joined", leaving: "leaving…", closed: "closed" };
    this.stateText.textContent = words[state] || state;
    this.stateText.dataset.state = state;
    this.tab.dataset.state = state;
    const closed = state === "closed";
    this.input.disabled = closed;
    this.composer.querySelectorAll("button").forEach((b) => {
      b.disabled = closed;
    });
  }

  setUnread(n) {
    this.unread = n;
    const badge = this.tab.querySelector(".unread");
    badge.textContent = n ? String(n) : "";
    badge.hidden = n === 0;
  }

  nameOf(userId, name) {
    if (name) return name;
    const known = this.room.participants.find((p) => p.user_id === userId);
    return (known && known.name) || userId;
  }

  renderPeople() {
    const people = this.room.participants.sort((a, b) => {
      if (a.user_id === page.me) return -1;
      if (b.user_id === page.me) return 1;
      return (a.name || a.user_id).localeCompare(b.name || b.user_id);
    });
    this.roster = new Map(people.map((p) => [p.user_id, p.name || p.user_id]));
    this.people.textContent = "";
    for (const p of people) {
      const state = p.state || {};
      const li = make("li", "person");
      li.dataset.userId = p.user_id;
      li.appendChild(avatar(p.user_id, p.name || p.user_id));
      const who = make("span", "person-who");
      const label = make("span", "person-name", p.name || p.user_id);
      label.title = p.user_id;
      who.appendChild(label);
      if (state.typing === true && p.user_id !== page.me) who.appendChild(make("span", "typing-badge", "typing…"));
      if (typeof state.status === "string" && state.status) {
        who.appendChild(make("span", "person-status", state.status.slice(0, 60)));
      }
      li.appendChild(who);
      if (p.user_id === page.me) li.appendChild(make("span", "you", "you"));
      this.people.appendChild(li);
    }
    this.count.textContent = String(this.room.participantCount || people.length);
    const typing = people.filter((p) => p.user_id !== page.me && p.state && p.state.typing === true);
    const names = typing.map((p) => p.name || p.user_id);
    let line = "";
    if (names.length === 1) line = `${names[0]} is typing…`;
    else if (names.length === 2) line = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) line = `${names.length} people are typing…`;
    this.typingLine.textContent = line;
  }

  messageEntry(frame) {
    const who = frame.user_id ? this.nameOf(frame.user_id, frame.name) : "you";
    const li = make("li", "msg" + (frame.user_id === page.me ? " mine" : ""));
    if (frame.seq !== null) li.dataset.seq = String(frame.seq);
    li.appendChild(avatar(frame.user_id || "you", who));
    const body = make("div", "msg-body");
    const meta = make("div", "meta");
    const sender = make("span", "who", who);
    if (frame.user_id) sender.title = frame.user_id;
    meta.appendChild(sender);
    const when = new Date(Number(frame.ts) * 1000);
    const time = make("time", null, clock(when));
    time.dateTime = when.toISOString();
    meta.appendChild(time);
    meta.appendChild(make("span", "seq", frame.seq !== null ? `#${frame.seq}` : ""));
    body.appendChild(meta);
    const data = frame.data;
    const isText = data && typeof data === "object" && !Array.isArray(data) && typeof data.text === "string";
    body.appendChild(make("p", "text", isText ? data.text : JSON.stringify(data)));
    li.appendChild(body);
    return li;
  }

  system(text, kind) {
    const li = make("li", "sys" + (kind ? ` sys-${kind}` : ""));
    li.appendChild(make("span", "sys-text", text));
    const now = new Date();
    const time = make("time", null, clock(now));
    time.dateTime = now.toISOString();
    li.appendChild(time);
    this.append(li);
  }

  append(node) {
    const log = this.log;
    const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    log.appendChild(node);
    while (log.childElementCount > MAX_LOG_ENTRIES) log.removeChild(log.firstElementChild);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  showCursor(frame, x, y) {
    const box = this.conversation.getBoundingClientRect();
    const transform = `translate(${Math.round(x * box.width)}px, ${Math.round(y * box.height)}px)`;
    let cursor = this.cursors.get(frame.user_id);
    if (!cursor) {
      const node = make("div", "cursor");
      node.dataset.userId = frame.user_id;
      node.style.setProperty("--hue", String(hue(frame.user_id)));
      node.style.transform = transform; // before it is on the page: no glide in from the corner
      node.appendChild(make("span", "cursor-arrow"));
      node.appendChild(make("span", "cursor-label", this.nameOf(frame.user_id, frame.name)));
      this.overlay.appendChild(node);
      cursor = { node, timer: undefined };
      this.cursors.set(frame.user_id, cursor);
    }
    cursor.node.style.transform = transform;
    clearTimeout(cursor.timer);
    cursor.timer = setTimeout(() => this.dropCursor(frame.user_id), CURSOR_STALE_MS);
  }

  dropCursor(userId) {
    const cursor = this.cursors.get(userId);
    if (!cursor) return;
    clearTimeout(cursor.timer);
    cursor.node.remove();
    this.cursors.delete(userId);
  }

  bubble(who, reaction) {
    const node = make("div", "bubble");
    node.appendChild(make("span", "bubble-reaction", reaction));
    node.appendChild(make("span", "bubble-who", who));
    node.style.setProperty("--left", `${10 + Math.round(Math.random() * 70)}%`);
    this.overlay.appendChild(node);
    setTimeout(() => node.remove(), REACTION_MS);
  }

  destroy() {
    clearTimeout(this.typingTimer);
    clearTimeout(this.cursorTimer);
    this.cursors.forEach((_, uid) => this.dropCursor(uid));
    this.tab.remove();
    this.panel.remove();
    page.views.delete(this.session);
    if (page.active === this) show(page.views.values().next().value || null);
    writeHash();
  }
}

function show(view) {
  page.active = view;
  for (const each of page.views.values()) {
    const on = each === view;
    each.tab.setAttribute("aria-selected", String(on));
    each.tab.tabIndex = on ? 0 : -1;
    each.panel.hidden = !on;
    if (on) each.setUnread(0);
  }
  setStatus(el.status.dataset.state, el.statusText.textContent);
}

function writeHash() {
  const hash = [...page.views.keys()].map(encodeURIComponent).join(",");
  history.replaceState(null, "", hash ? `#${hash}` : location.pathname);
}

// -- the connection ------------------------------------------------------------------------------

function onConnectionState(event) {
  const { state, code, reason } = event;
  if (state === "open") {
    page.wasOpen = true;
    setStatus("live", "live");
  } else if (state === "connecting") {
    setStatus("connecting", "connecting…");
  } else if (state === "reconnecting") {
    const seconds = event.delay < 1000 ? `${event.delay} ms` : `${(event.delay / 1000).toFixed(1)} s`;
    setStatus("reconnecting", `reconnecting in ${seconds} · ${describe(code, reason)} (attempt ${event.attempt})`);
    if (page.wasOpen) {
      // Once per outage, in every session: what happened, and that messages typed now are kept.
      page.wasOpen = false;
      for (const view of page.views.values()) {
        view.system(`Connection lost (${describe(code, reason)}). Reconnecting; messages you send meanwhile are kept`, "warn");
      }
    }
  } else if (state === "closed") {
    setStatus("closed", `closed · ${describe(code, reason)}`);
    el.disconnect.textContent = "Back";
    if (page.views.size === 0) showJoin(`Disconnected: ${describe(code, reason)}`);
  }
}

function joinSession(session) {
  const name = session.trim();
  if (!name || !page.conn) return;
  const existing = page.views.get(name);
  if (existing) return show(existing);
  if (page.conn.state === "closed") return;
  const view = new RoomView(page.conn.join(name));
  page.views.set(name, view);
  if (!page.active) show(view);
  writeHash();
  return view;
}

/** The token for each (re)connect: the pasted one, or a fresh demo token for the name typed. */
function tokenSource(identity) {
  if (identity.token) return identity.token;
  const query = new URLSearchParams({ user: identity.userId, org: identity.org, name: identity.name });
  return async () => {
    const response = await fetch(`/demo/token?${query}`, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`demo token request failed (HTTP ${response.status})`);
    return (await response.json()).token;
  };
}

function start(identity, sessions) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  page.conn = connect(`${scheme}//${location.host}`, { token: tokenSource(identity) });
  page.conn.on("state", onConnectionState);
  page.conn.on("connected", (frame) => {
    page.me = frame.user_id;
    el.whoami.textContent = `${frame.user_id} · ${frame.org_id}`;
  });
  el.joinView.hidden = true;
  el.appView.hidden = false;
  el.disconnect.hidden = false;
  el.disconnect.textContent = "Disconnect";
  setStatus("connecting", "connecting…");
  sessions.forEach(joinSession);
  show(page.views.values().next().value || null);
  if (page.active) page.active.input.focus();
}

function stop() {
  const conn = page.conn;
  page.conn = null;
  if (conn) conn.close();
  for (const view of [...page.views.values()]) view.destroy();
  page.wasOpen = false;
  showJoin("");
}

function showJoin(error) {
  el.appView.hidden = true;
  el.disconnect.hidden = true;
  el.joinView.hidden = false;
  showError(error);
  setStatus("idle", "not connected");
  el.connect.focus();
}

// -- the join form ----------------------------------------------------------------------------

function showError(text) {
  el.joinError.textContent = text;
  el.joinError.hidden = !text;
}

function applyMode() {
  if (page.demo) {
    el.mode.textContent = "demo mode";
    el.mode.dataset.mode = "demo";
    el.identity.hidden = false;
    el.tokenField.hidden = !el.token.value.trim();
    el.tokenToggle.hidden = !el.tokenField.hidden;
    el.tokenNote.textContent = "Optional: leave it empty and the demo server signs one for the name above.";
  } else {
    el.mode.textContent = page.demo === false ? "token mode" : "server unreachable";
    el.mode.dataset.mode = page.demo === false ? "token" : "offline";
    el.identity.hidden = true;
    el.tokenField.hidden = false;
    el.tokenToggle.hidden = true;
    el.joinHint.textContent =
      "This server is not in demo mode: paste a JWT (its sub and org claims say who you are). To try it without one, run ";
    el.joinHint.appendChild(make("code", null, "python -m tornado_ws --demo"));
    el.joinHint.appendChild(document.createTextNode("."));
    el.tokenNote.textContent = "Required: a JWT signed for this server.";
  }
}

async function detectMode() {
  // /demo/token exists only in --demo mode; a 404 means "bring your own token".
  try {
    const response = await fetch("/demo/token?user=demo-check", { cache: "no-store", credentials: "same-origin" });
    page.demo = response.ok;
  } catch {
    page.demo = null;
  }
  applyMode();
}

function readForm() {
  const token = el.token.value.trim();
  const name = el.name.value.trim();
  const org = el.org.value.trim();
  const sessions = el.sessions.value.split(/[\s,]+/).filter(Boolean);
  if (sessions.length === 0) {
    el.sessions.focus();
    return "Enter at least one session.";
  }
  if (!token) {
    if (!page.demo) {
      el.token.focus();
      return "Paste a token: this server is not in demo mode.";
    }
    if (!name) {
      el.name.focus();
      return "Enter a name.";
    }
    if (!org) {
      el.org.focus();
      return "Enter an organization.";
    }
  }
  const userId = name.toLowerCase().replace(/\s+/g, "-");
  return { identity: { token, name, org, userId }, sessions };
}

async function submit(event) {
  event.preventDefault();
  if (page.demo === null) await detectMode(); // the first probe failed: ask again before deciding
  if (page.demo === null) return showError("The server does not answer; is it running?");
  const form = readForm();
  if (typeof form === "string") return showError(form);
  showError("");
  start(form.identity, form.sessions);
}

// -- start ---------------------------------------------------------------------------------------

el.joinForm.addEventListener("submit", submit);
el.disconnect.addEventListener("click", stop);
el.addForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const names = el.addSession.value.split(/[\s,]+/).filter(Boolean);
  el.addSession.value = "";
  let last;
  for (const name of names) last = joinSession(name) || last;
  if (last) show(last);
});
el.myStatus.addEventListener("change", () => page.views.forEach((view) => view.publishPresence()));
el.tokenToggle.addEventListener("click", () => {
  el.tokenField.hidden = false;
  el.tokenToggle.hidden = true;
  el.token.focus();
});
el.tabs.addEventListener("keydown", (event) => {
  // Arrow keys move between tabs, as in any tab list.
  if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
  const views = [...page.views.values()];
  const at = views.indexOf(page.active);
  const next = views[(at + (event.key === "ArrowRight" ? 1 : views.length - 1)) % views.length];
  if (next) {
    show(next);
    next.tab.focus();
  }
});

let fromHash = "";
try {
  fromHash = decodeURIComponent(location.hash.slice(1));
} catch {
  fromHash = "";
}
el.sessions.value = fromHash || "lobby";
if (!el.org.value) el.org.value = "demo";
setStatus("idle", "not connected");
detectMode();
