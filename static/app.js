/* tornado-ws demo page: join a session, chat, watch presence, survive drops.
 *
 * Plain script, no dependencies. The page's CSP forbids inline script, so all
 * behaviour lives here; everything a user or peer typed is put on the page
 * with textContent, never parsed as HTML.
 */
(function () {
  "use strict";

  // -- protocol facts -------------------------------------------------------

  var CLOSE_MEANINGS = {
    1000: "normal closure",
    1001: "going away (server shutting down)",
    1002: "protocol error",
    1005: "closed without a status",
    1006: "connection lost",
    1007: "invalid UTF-8",
    1008: "policy violation (bad token or session id)",
    1009: "message too big",
    1011: "internal server error",
    1012: "session restarted",
    1013: "try again later",
    4000: "no answer to ping",
    4001: "token expired",
    4003: "kicked from the session",
    4004: "forbidden in this session",
    4008: "slow consumer (fell too far behind)"
  };
  /** Close codes after which retrying with the same credentials cannot work. */
  var TERMINAL = { 1002: true, 1007: true, 1008: true, 1009: true, 4003: true, 4004: true };
  var SESSION_ID = /^[A-Za-z0-9._~:-]{1,128}$/;

  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var TRY_LATER_MIN_MS = 5000;
  var HEARTBEAT_EVERY_MS = 20000;
  var HEARTBEAT_GRACE_MS = 10000;
  var MAX_LOG_ENTRIES = 500;

  // -- DOM ---------------------------------------------------------------------

  function $(id) {
    return document.getElementById(id);
  }

  var el = {
    mode: $("mode"),
    joinView: $("join-view"),
    joinHint: $("join-hint"),
    joinForm: $("join-form"),
    joinError: $("join-error"),
    identity: $("identity-fields"),
    name: $("name"),
    org: $("org"),
    session: $("session"),
    tokenField: $("token-field"),
    token: $("token"),
    tokenNote: $("token-note"),
    tokenToggle: $("token-toggle"),
    connect: $("connect"),
    chatView: $("chat-view"),
    whereSession: $("where-session"),
    whereOrg: $("where-org"),
    whereUser: $("where-user"),
    status: $("status"),
    statusText: $("status-text"),
    leave: $("leave"),
    people: $("participants"),
    peopleCount: $("people-count"),
    log: $("log"),
    composer: $("composer"),
    message: $("message"),
    send: $("send")
  };

  /** createElement with a class and text content (never HTML). */
  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // -- state -------------------------------------------------------------------

  var state = {
    demo: null, // true / false once the server answered, null while unknown
    want: false, // the user asked to be connected
    gen: 0, // bumps on every join/leave so stale callbacks can tell
    ws: null,
    attempt: 0, // failed attempts since the last welcome
    retryTimer: null,
    heartbeatTimer: null,
    pingTimer: null,
    join: null, // {session, org, userId, name, token}
    me: null, // user_id from the welcome
    epoch: null,
    lastSeq: null,
    people: new Map() // user_id -> display name
  };

  function closeMeaning(code) {
    return CLOSE_MEANINGS[code] || (code >= 4000 ? "application close" : "unknown close code");
  }

  function describeClose(code, reason) {
    var text = code + " " + closeMeaning(code);
    if (reason) text += ": " + reason;
    return text;
  }

  function setStatus(kind, text) {
    el.status.dataset.state = kind;
    el.statusText.textContent = text;
    var live = kind === "live";
    el.message.disabled = !live;
    el.send.disabled = !live;
    document.title = (live ? "" : "(" + kind + ") ") + (state.join ? state.join.session + " · " : "") + "tornado-ws demo";
  }

  // -- demo mode ---------------------------------------------------------------

  function applyMode() {
    if (state.demo) {
      el.mode.textContent = "demo mode";
      el.mode.dataset.mode = "demo";
      el.identity.hidden = false;
      el.tokenField.hidden = !el.token.value.trim();
      el.tokenToggle.hidden = !el.tokenField.hidden;
      el.tokenNote.textContent = "Optional: leave it empty and the demo server signs one for the name above.";
      el.token.required = false;
    } else {
      el.mode.textContent = state.demo === false ? "token mode" : "server unreachable";
      el.mode.dataset.mode = state.demo === false ? "token" : "offline";
      el.identity.hidden = true;
      el.tokenField.hidden = false;
      el.tokenToggle.hidden = true;
      el.joinHint.textContent =
        "This server is not in demo mode: paste a JWT (its sub and org claims say who you are). " +
        "To try it without one, run ";
      el.joinHint.appendChild(make("code", null, "python -m tornado_ws --demo"));
      el.joinHint.appendChild(document.createTextNode("."));
      el.tokenNote.textContent = "Required: a JWT signed for this server.";
      el.token.required = true;
    }
  }

  function detectMode() {
    // /demo/token exists only in --demo mode; any 404 means "bring your own token".
    return fetch("/demo/token?user=demo-check", { cache: "no-store", credentials: "same-origin" })
      .then(function (res) {
        state.demo = res.ok;
      })
      .catch(function () {
        state.demo = null;
      })
      .then(applyMode);
  }

  function demoUserId(name) {
    return name.trim().toLowerCase().replace(/\s+/g, "-");
  }

  /** The token for the next attempt: the pasted one, or a fresh demo token. */
  function tokenFor(join) {
    if (join.token) return Promise.resolve(join.token);
    var query = new URLSearchParams({ user: join.userId, org: join.org, name: join.name });
    return fetch("/demo/token?" + query.toString(), { cache: "no-store", credentials: "same-origin" }).then(
      function (res) {
        if (!res.ok) throw new Error("demo token request failed (HTTP " + res.status + ")");
        return res.json().then(function (body) {
          return body.token;
        });
      }
    );
  }

  // -- the log ----------------------------------------------------------------

  function nearBottom() {
    return el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 80;
  }

  function append(node) {
    var stick = nearBottom();
    el.log.appendChild(node);
    while (el.log.childElementCount > MAX_LOG_ENTRIES) el.log.removeChild(el.log.firstElementChild);
    if (stick) el.log.scrollTop = el.log.scrollHeight;
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function logSystem(text, kind) {
    var li = make("li", "sys" + (kind ? " sys-" + kind : ""));
    li.appendChild(make("span", "sys-text", text));
    var now = new Date();
    var time = make("time", null, clock(now));
    time.dateTime = now.toISOString();
    li.appendChild(time);
    append(li);
  }

  function displayName(userId, name) {
    return name || userId;
  }

  function hue(text) {
    var h = 0;
    for (var i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
    return h;
  }

  function avatar(userId, label) {
    var span = make("span", "avatar", Array.from(label.trim() || "?")[0].toUpperCase());
    span.style.setProperty("--hue", String(hue(userId)));
    span.setAttribute("aria-hidden", "true");
    return span;
  }

  function messageText(data) {
    if (data && typeof data === "object" && !Array.isArray(data) && typeof data.text === "string") {
      return data.text;
    }
    return JSON.stringify(data);
  }

  function logMessage(frame) {
    var who = displayName(frame.user_id, frame.name);
    var li = make("li", "msg" + (frame.user_id === state.me ? " mine" : ""));
    li.dataset.seq = String(frame.seq);
    li.appendChild(avatar(frame.user_id, who));
    var body = make("div", "msg-body");
    var meta = make("div", "meta");
    var sender = make("span", "who", who);
    sender.title = frame.user_id;
    meta.appendChild(sender);
    var when = new Date(Number(frame.ts) * 1000);
    var time = make("time", null, clock(when));
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    meta.appendChild(time);
    meta.appendChild(make("span", "seq", "#" + frame.seq));
    body.appendChild(meta);
    body.appendChild(make("p", "text", messageText(frame.data)));
    li.appendChild(body);
    append(li);
  }

  // -- presence ----------------------------------------------------------------

  function renderPeople(count) {
    el.people.textContent = "";
    var sorted = Array.from(state.people.entries()).sort(function (a, b) {
      if (a[0] === state.me) return -1;
      if (b[0] === state.me) return 1;
      return a[1].localeCompare(b[1]);
    });
    sorted.forEach(function (entry) {
      var li = make("li", "person");
      li.dataset.userId = entry[0];
      li.appendChild(avatar(entry[0], entry[1]));
      var label = make("span", "person-name", entry[1]);
      label.title = entry[0];
      li.appendChild(label);
      if (entry[0] === state.me) li.appendChild(make("span", "you", "you"));
      el.people.appendChild(li);
    });
    el.peopleCount.textContent = String(typeof count === "number" ? count : state.people.size);
  }

  // -- frames ------------------------------------------------------------------

  function onWelcome(frame) {
    var resuming = state.epoch !== null && state.lastSeq !== null;
    var before = state.people;
    state.attempt = 0;
    state.me = frame.user_id;
    el.whereOrg.textContent = frame.org_id;
    el.whereUser.textContent = frame.user_id;
    state.people = new Map();
    (frame.participants || []).forEach(function (p) {
      state.people.set(p.user_id, displayName(p.user_id, p.name));
    });
    renderPeople(frame.participant_count);
    setStatus("live", "live");

    if (!resuming) {
      el.message.focus();
      var others = state.people.size - 1;
      logSystem(
        "You joined " + frame.session_id + " as " + displayName(frame.user_id, state.people.get(frame.user_id)) +
          (others > 0 ? " · " + others + (others === 1 ? " other person here" : " other people here") : " · nobody else here yet")
      );
    } else {
      // The welcome's participant list is authoritative: report who came and went meanwhile.
      before.forEach(function (name, uid) {
        if (!state.people.has(uid)) logSystem(name + " left", "leave");
      });
      state.people.forEach(function (name, uid) {
        if (!before.has(uid)) logSystem(name + " joined", "join");
      });
      if (frame.recovered) {
        var missed = Math.max(0, frame.seq - state.lastSeq);
        logSystem(
          "Reconnected: recovered " + missed + " missed message" + (missed === 1 ? "" : "s"),
          "ok"
        );
      } else {
        logSystem("Reconnected, but could not recover missed messages (history is gone)", "warn");
      }
    }
    if (!resuming || !frame.recovered || frame.epoch !== state.epoch) {
      state.lastSeq = frame.seq;
    }
    state.epoch = frame.epoch;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        onWelcome(frame);
        break;
      case "user_joined":
        state.people.set(frame.user_id, displayName(frame.user_id, frame.name));
        renderPeople(frame.participant_count);
        logSystem(displayName(frame.user_id, frame.name) + " joined", "join");
        break;
      case "user_left":
        state.people.delete(frame.user_id);
        renderPeople(frame.participant_count);
        logSystem(displayName(frame.user_id, frame.name) + " left", "leave");
        break;
      case "message":
        if (typeof frame.seq === "number" && state.lastSeq !== null && frame.seq <= state.lastSeq) return;
        if (typeof frame.seq === "number") state.lastSeq = frame.seq;
        logMessage(frame);
        break;
      case "error":
        logSystem("Server refused a frame: " + frame.code + " (" + frame.message + ")", "warn");
        break;
      case "pong":
        break;
      default:
        break;
    }
  }

  // -- the connection ------------------------------------------------------------

  function stopTimers() {
    clearTimeout(state.retryTimer);
    clearInterval(state.heartbeatTimer);
    clearTimeout(state.pingTimer);
    state.retryTimer = state.heartbeatTimer = state.pingTimer = null;
  }

  function wsUrl(join, token) {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var query = new URLSearchParams({ token: token });
    if (state.epoch !== null && state.lastSeq !== null) {
      query.set("since", String(state.lastSeq));
      query.set("epoch", state.epoch);
    }
    return scheme + "//" + location.host + "/ws/" + encodeURIComponent(join.session) + "?" + query.toString();
  }

  function connect() {
    var gen = state.gen;
    stopTimers();
    setStatus(
      state.attempt ? "reconnecting" : "connecting",
      state.attempt ? "reconnecting… (attempt " + (state.attempt + 1) + ")" : "connecting…"
    );
    tokenFor(state.join).then(
      function (token) {
        if (gen !== state.gen || !state.want) return;
        openSocket(token, gen);
      },
      function (err) {
        if (gen !== state.gen || !state.want) return;
        retry("could not get a token: " + err.message);
      }
    );
  }

  function openSocket(token, gen) {
    var ws;
    try {
      ws = new WebSocket(wsUrl(state.join, token));
    } catch (err) {
      retry(String(err.message || err));
      return;
    }
    state.ws = ws;
    ws.addEventListener("message", function (ev) {
      if (state.ws !== ws) return;
      var frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      clearTimeout(state.pingTimer); // any frame proves the connection is alive
      state.pingTimer = null;
      if (frame && typeof frame === "object") onFrame(frame);
    });
    ws.addEventListener("close", function (ev) {
      if (state.ws !== ws || gen !== state.gen) return;
      state.ws = null;
      closed(ev.code, ev.reason);
    });
    state.heartbeatTimer = setInterval(function () {
      heartbeat(ws);
    }, HEARTBEAT_EVERY_MS);
  }

  /** A client-side ping: a half-open TCP connection otherwise goes unnoticed for minutes. */
  function heartbeat(ws) {
    if (state.ws !== ws || ws.readyState !== WebSocket.OPEN || state.pingTimer) return;
    ws.send(JSON.stringify({ type: "ping" }));
    state.pingTimer = setTimeout(function () {
      if (state.ws !== ws) return;
      state.ws = null;
      ws.close(4000, "no answer to ping");
      closed(4000, "");
    }, HEARTBEAT_GRACE_MS);
  }

  function closed(code, reason) {
    stopTimers();
    if (!state.want) return;
    var what = describeClose(code, reason);
    if (TERMINAL[code] || (code === 4001 && state.join.token)) {
      state.want = false;
      setStatus("closed", "closed · " + what);
      logSystem(
        "Disconnected: " + what + ". Not reconnecting" +
          (code === 4001 ? ": paste a fresh token and join again." : "; check the details and join again."),
        "error"
      );
      el.leave.textContent = "Back";
      return;
    }
    logSystem("Disconnected: " + what + ". Reconnecting…", "warn");
    retry(what, code);
  }

  function retry(why, code) {
    stopTimers();
    state.attempt += 1;
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, state.attempt - 1));
    var delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    if (code === 1013) delay = Math.max(delay, TRY_LATER_MIN_MS);
    var seconds = delay < 1000 ? delay.toFixed(0) + " ms" : (delay / 1000).toFixed(1) + " s";
    setStatus("reconnecting", "reconnecting in " + seconds + " · " + why);
    state.retryTimer = setTimeout(connect, delay);
  }

  // -- user actions --------------------------------------------------------------

  function showError(text) {
    el.joinError.textContent = text;
    el.joinError.hidden = !text;
  }

  function readJoinForm() {
    var token = el.token.value.trim();
    var session = el.session.value.trim();
    var name = el.name.value.trim();
    var org = el.org.value.trim();
    if (!SESSION_ID.test(session)) {
      el.session.focus();
      return "Session: 1-128 letters, digits or . _ ~ : -";
    }
    if (!token) {
      if (!state.demo) {
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
    return { session: session, org: org, name: name, userId: demoUserId(name), token: token };
  }

  function join(ev) {
    ev.preventDefault();
    if (state.demo === null) {
      // The first probe failed (server down?): ask again before deciding.
      detectMode().then(function () {
        if (state.demo !== null) join(ev);
        else showError("The server does not answer; is it running?");
      });
      return;
    }
    var join = readJoinForm();
    if (typeof join === "string") {
      showError(join);
      return;
    }
    showError("");
    state.gen += 1;
    state.join = join;
    state.want = true;
    state.attempt = 0;
    state.me = null;
    state.epoch = null;
    state.lastSeq = null;
    state.people = new Map();
    renderPeople(0);
    el.log.textContent = "";
    el.whereSession.textContent = join.session;
    el.whereOrg.textContent = join.token ? "…" : join.org;
    el.whereUser.textContent = join.token ? "…" : join.userId;
    el.leave.textContent = "Leave";
    if (location.hash !== "#" + join.session) history.replaceState(null, "", "#" + join.session);
    el.joinView.hidden = true;
    el.chatView.hidden = false;
    connect();
    el.message.focus();
  }

  function leave() {
    state.want = false;
    state.gen += 1;
    stopTimers();
    var ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "left");
    setStatus("idle", "idle");
    el.chatView.hidden = true;
    el.joinView.hidden = false;
    el.connect.focus();
  }

  function send(ev) {
    ev.preventDefault();
    var text = el.message.value.trim();
    var ws = state.ws;
    if (!text || !ws || ws.readyState !== WebSocket.OPEN || el.status.dataset.state !== "live") return;
    ws.send(JSON.stringify({ type: "message", data: { text: text } }));
    el.message.value = "";
    el.message.focus();
  }

  // -- start ---------------------------------------------------------------------

  el.joinForm.addEventListener("submit", join);
  el.composer.addEventListener("submit", send);
  el.leave.addEventListener("click", leave);
  el.tokenToggle.addEventListener("click", function () {
    el.tokenField.hidden = false;
    el.tokenToggle.hidden = true;
    el.token.focus();
  });
  window.addEventListener("online", function () {
    // Back online: skip the rest of the backoff.
    if (state.want && state.retryTimer) connect();
  });

  var fromHash = "";
  try {
    fromHash = decodeURIComponent(location.hash.slice(1));
  } catch (err) {
    fromHash = "";
  }
  el.session.value = SESSION_ID.test(fromHash) ? fromHash : "lobby";
  if (!el.org.value) el.org.value = "demo";
  setStatus("idle", "idle");
  detectMode();
})();
