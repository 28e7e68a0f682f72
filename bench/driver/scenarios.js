'use strict';
// The scenarios, by the key the Python side gives them (bench/scenarios.py).
// Each takes (ctx, params) and returns a flat object of figures; the Python
// side names and formats them. Times are in ms, rates per second, CPU in µs or
// % of one core. The fan-out ones are in fanout.js, /ws's in multiplex.js, issue #17's (cursors,
// big room) in presence.js.
const { Histogram, rssKiB } = require('./stats');
const { BT, SENDER, isMessage, load, messageFrame, now, numberAfter, sleep } = require('./harness');
const { fanout, fanoutIds } = require('./fanout');
const { multiplex } = require('./multiplex');
const { bigRoom, cursors } = require('./presence');

/** R rooms × M members, everyone publishes; each member keeps one publish in flight. */
async function rooms(ctx, p) {
  const hist = new Histogram();
  let msgs = 0;
  let running = false;
  let recording = false;
  const perRoom = new Array(p.rooms).fill(0); // deliveries per room: how evenly the server serves them
  const handlers = {
    onText(w, buf, s, e) {
      if (!isMessage(buf, s, e)) return;
      msgs++;
      if (recording) {
        hist.record(now() - numberAfter(buf, s, e, BT));
        perRoom[Math.floor(w.tag / p.members)]++;
      }
      // Our own copy came back: the next publish (closed loop, window 1).
      if (running && numberAfter(buf, s, e, SENDER) === w.tag) w.sendText(messageFrame(p.message_bytes, w.tag));
    },
  };
  const n = p.rooms * p.members;
  const conns = await ctx.connectMany(n, (i) => ({ room: `r${Math.floor(i / p.members)}`, user: `m${i}` }), handlers);
  const live = conns.filter(Boolean);
  await ctx.quiesce(() => msgs);
  ctx.phase('rooms');
  running = true;
  for (const c of live) c.sendText(messageFrame(p.message_bytes, c.tag));
  await sleep(p.warmup * 1000);
  hist.reset();
  recording = true;
  const m0 = msgs;
  const win = ctx.window();
  await sleep(p.duration * 1000);
  const w = win.end();
  const delivered = msgs - m0;
  running = false;
  recording = false;
  await ctx.quiesce(() => msgs);
  return {
    connections: live.length,
    deliveries_per_s: delivered / w.seconds,
    server_us_per_delivery: w.server_cpu_us / Math.max(1, delivered),
    ...load(w),
    p50_ms: hist.percentile(50),
    p99_ms: hist.percentile(99),
    slowest_room_pct: (100 * Math.min(...perRoom)) / Math.max(1, delivered / p.rooms),
  };
}

/** N idle connections in rooms of M: server RSS growth per connection, idle CPU. */
async function idle(ctx, p) {
  let frames = 0;
  const handlers = {
    onText() {
      frames++;
    },
  };
  const rss0 = rssKiB(ctx.cfg.pids);
  const t0 = now();
  const conns = await ctx.connectMany(p.connections, (i) => ({ room: `i${Math.floor(i / p.members)}`, user: `i${i}` }), handlers);
  const connectSeconds = (now() - t0) / 1000;
  const live = conns.filter(Boolean).length;
  await ctx.quiesce(() => frames);
  await sleep(p.settle * 1000);
  ctx.phase('idle');
  const win = ctx.window();
  await sleep(p.hold * 1000);
  const w = win.end();
  const rss1 = rssKiB(ctx.cfg.pids);
  return {
    connections: live,
    rss_before_kib: rss0,
    rss_after_kib: rss1,
    kib_per_connection: live ? (rss1 - rss0) / live : null,
    connect_per_s: live / connectSeconds,
    idle_server_cpu_pct: w.server_cpu_pct,
    ...load(w),
  };
}

/** Closed-loop workers: connect + token + welcome, close, again. Returns a stop function and counters. */
function cycler(ctx, workers, room, prefix) {
  const state = { cycles: 0, stop: false, done: null };
  let seq = 0;
  const ignore = { onText() {} };
  const worker = async (k) => {
    while (!state.stop) {
      try {
        const ws = await ctx.connect(room(k), `${prefix}${seq++}`, ignore, k);
        state.cycles++;
        await ctx.closeAndWait(ws);
      } catch (err) {
        ctx.error(`cycle: ${err.message}`);
        await sleep(10);
      }
    }
  };
  state.done = Promise.all(Array.from({ length: workers }, (_, k) => worker(k)));
  return state;
}

/** Handshake rate: connect + auth + welcome per second (each then closes). */
async function handshake(ctx, p) {
  ctx.phase('handshake');
  const cyc = cycler(ctx, p.concurrency, (k) => `hs${k}`, 'h');
  await sleep(p.warmup * 1000);
  const c0 = cyc.cycles;
  const win = ctx.window();
  await sleep(p.duration * 1000);
  const w = win.end();
  const done = cyc.cycles - c0;
  cyc.stop = true;
  await cyc.done;
  return {
    handshakes_per_s: done / w.seconds,
    server_us_per_handshake: w.server_cpu_us / Math.max(1, done),
    ...load(w),
  };
}

/** Connect/disconnect cycles while every room has a steady broadcast. */
async function churn(ctx, p) {
  const hist = new Histogram();
  let msgs = 0;
  let recording = false;
  const handlers = {
    onText(w, buf, s, e) {
      if (!isMessage(buf, s, e)) return;
      msgs++;
      if (recording) hist.record(now() - numberAfter(buf, s, e, BT));
    },
  };
  const n = p.rooms * p.members;
  const conns = await ctx.connectMany(n, (i) => ({ room: `c${i % p.rooms}`, user: `s${i}` }), handlers);
  const live = conns.filter(Boolean);
  const publishers = live.slice(0, p.rooms); // member i is in room i % rooms: one per room
  await ctx.quiesce(() => msgs);
  ctx.phase('churn');
  let background = true;
  const bg = (async () => {
    while (background) {
      await ctx.openLoop(p.rate_per_room * publishers.length, 0.5, (i) => {
        const pub = publishers[i % publishers.length];
        pub.sendText(messageFrame(p.message_bytes, pub.tag));
      });
    }
  })();
  const cyc = cycler(ctx, p.concurrency, (k) => `c${k % p.rooms}`, 'x');
  await sleep(p.warmup * 1000);
  hist.reset();
  recording = true;
  const c0 = cyc.cycles;
  const m0 = msgs;
  const win = ctx.window();
  await sleep(p.duration * 1000);
  const w = win.end();
  const cycles = cyc.cycles - c0;
  const delivered = msgs - m0;
  recording = false;
  cyc.stop = true;
  background = false;
  await Promise.all([cyc.done, bg]);
  return {
    cycles_per_s: cycles / w.seconds,
    deliveries_per_s: delivered / w.seconds,
    offered_deliveries_per_s: p.rooms * p.rate_per_room * (live.length / p.rooms),
    p50_ms: hist.percentile(50),
    p99_ms: hist.percentile(99),
    ...load(w),
  };
}

module.exports = { fanout, 'fanout-ids': fanoutIds, multiplex, rooms, idle, handshake, churn, cursors, 'big-room': bigRoom };
