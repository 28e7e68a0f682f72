'use strict';
// Issue #17's scenarios: live cursors (keyed signals at a fixed rate from every member of one
// session) and a big room (N members joining one session, with and without the presence roster
// limit). The peers have neither signals nor presence: they relay a `signal` frame to the other
// members like any frame (no latest-wins), and a join into their room is a connect and a welcome.
const { Histogram, cpuMicros } = require('./stats');
const { load, now, numberAfter, sleep } = require('./harness');

const S = 0x73; // 's' at offset 9: `{"type":"signal"...` (no other server frame has it there)
const U = 0x75; // 'u' at offset 9 and 'j' at 14: `{"type":"user_joined"...` (`user_left` has an 'l')
const J = 0x6a;
const P = 0x70; // 'p': `{"type":"presence_summary"...` (nobody sets a presence state here)
const T = Buffer.from('"t":'); // the send time in a cursor's data: no other key of the frame is "t"
const COUNT = Buffer.from('"participant_count":');

/** One member's cursor: a keyed signal carrying its send time (ms, the driver's clock). */
const cursorFrame = (x, y) =>
  Buffer.from(`{"type":"signal","data":{"x":${x},"y":${y},"t":${now().toFixed(3)}},"key":"cursor"}`);

/**
 * `members` sockets in one session, each sending a cursor `hz` times a second, spread evenly (the
 * j-th signal of the run is due at j / (members × hz) s, from member j mod members), for `warmup`
 * then `duration` s. Every signal is for the other members: deliveries, latency, server CPU.
 */
async function cursors(ctx, p) {
  const hist = new Histogram();
  let delivered = 0;
  let recording = false;
  const handlers = {
    onText(w, buf, s, e) {
      if (e - s < 10 || buf[s + 9] !== S) return;
      delivered++;
      if (recording) hist.record(now() - numberAfter(buf, s, e, T));
    },
  };
  const conns = await ctx.connectMany(p.members, (i) => ({ room: 'cursors', user: `c${i}` }), handlers);
  const live = conns.filter(Boolean);
  if (live.length < 2) return { members: live.length };
  ctx.phase('cursors');
  const rate = live.length * p.hz;
  // How late the driver sends each cursor (its timer, or a stall of its core): a late batch reaches
  // the server in one pass, where tornado-ws keeps only each sender's latest.
  const lag = new Histogram();
  let sent = 0;
  const start = now();
  const sending = ctx.openLoop(rate, p.warmup + p.duration, (j) => {
    if (recording) lag.record(now() - start - (1000 * j) / rate);
    live[j % live.length].sendText(cursorFrame(j % 1920, (j * 7) % 1080));
    sent++;
  });
  await sleep(p.warmup * 1000);
  hist.reset();
  recording = true;
  const d0 = delivered;
  const s0 = sent;
  const win = ctx.window();
  await sleep(p.duration * 1000);
  const w = win.end();
  const inWindow = delivered - d0;
  const offered = (sent - s0) * (live.length - 1);
  recording = false;
  await sending;
  // Every signal sent, to every other member: what did not come was replaced (latest wins) or dropped.
  const expected = sent * (live.length - 1);
  // Not `until`: a shortfall is a figure here (latest-wins, or a peer still behind), not an error.
  const tail = now();
  for (let last = delivered, since = now(); delivered < expected && now() - since < 300; await sleep(5)) {
    if (now() - tail >= 2000) break;
    if (delivered !== last) [last, since] = [delivered, now()];
  }
  return {
    members: live.length,
    signals_per_s: (sent - s0) / w.seconds,
    deliveries_per_s: inWindow / w.seconds,
    offered_per_s: offered / w.seconds,
    // Over the whole run, once 300 ms passed without a delivery (at most 2 s after the last send):
    // latest-wins replacements, drops, and what a peer still had queued are the gap.
    delivered_pct: (100 * delivered) / Math.max(1, expected),
    p50_ms: hist.percentile(50),
    p99_ms: hist.percentile(99),
    max_ms: hist.max,
    send_lag_p99_ms: lag.percentile(99),
    send_lag_max_ms: lag.max,
    server_us_per_delivery: w.server_cpu_us / Math.max(1, inWindow),
    ...load(w),
  };
}

/**
 * `members` sockets join one session, `concurrency` handshakes at a time, for at most `budget_s`
 * s: time and server CPU until the last welcome, then until every presence frame arrived. With
 * presence (tornado-ws), `roster_limit` says what must arrive: `user_joined` frames for the joins
 * up to the limit (m(m-1)/2 of them for m = min(members, limit)), then `presence_summary` frames,
 * the last of which tells every member the final count.
 */
async function bigRoom(ctx, p) {
  const { pids, clk_tck: clk } = ctx.cfg;
  const presence = (ctx.cfg.features || []).includes('presence');
  let joinedFrames = 0;
  let summaryFrames = 0;
  const byCount = new Map(); // summaries received, by the participant_count they told
  const handlers = {
    onText(w, buf, s, e) {
      const t = buf[s + 9];
      if (t === U && buf[s + 14] === J) {
        joinedFrames++;
      } else if (t === P) {
        summaryFrames++;
        const count = numberAfter(buf, s, e, COUNT);
        byCount.set(count, (byCount.get(count) || 0) + 1);
      }
    },
  };
  const conns = [];
  const progress = []; // [members, s, server CPU s] at every tenth of the room
  const step = Math.max(1, Math.floor(p.members / 10));
  ctx.phase('join');
  const t0 = now();
  const cpu0 = cpuMicros(pids, clk);
  const deadline = t0 + p.budget_s * 1000;
  let next = 0;
  const worker = async () => {
    while (next < p.members && now() < deadline) {
      const i = next++;
      try {
        conns.push(await ctx.connect('big', `b${i}`, handlers, i));
      } catch (err) {
        ctx.error(`connect: ${err.message}`);
      }
      if (conns.length % step === 0) {
        progress.push([conns.length, (now() - t0) / 1000, (cpuMicros(pids, clk) - cpu0) / 1e6]);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(p.concurrency, p.members) }, worker));
  const joinS = (now() - t0) / 1000;
  const cpuJoined = (cpuMicros(pids, clk) - cpu0) / 1e6;
  const n = conns.length;
  const m = Math.min(n, p.roster_limit);
  const announced = (m * (m - 1)) / 2;
  let drained = true;
  if (presence) {
    // Over the limit, the last summary tells all n members that they are n.
    const done = () => joinedFrames >= announced && (n <= p.roster_limit || (byCount.get(n) || 0) >= n);
    drained = await ctx.until(done, 'every presence frame of the room', p.drain_s * 1000);
  }
  const settleS = (now() - t0) / 1000;
  const cpuS = (cpuMicros(pids, clk) - cpu0) / 1e6;
  const half = progress.find(([k]) => k >= n / 2);
  let bytes = 0;
  for (const c of conns) bytes += c.sock.bytesRead;
  return {
    members: n,
    join_s: joinS,
    settle_s: settleS,
    server_cpu_s: cpuS,
    server_cpu_s_joined: cpuJoined,
    server_us_per_join: n ? (1e6 * cpuS) / n : null,
    // O(N) makes the second half cost about the first; O(N²) about 3 times it.
    half_cpu_ratio: half && half[2] > 0 ? (cpuS - half[2]) / half[2] : null,
    user_joined_frames: presence ? joinedFrames : null,
    user_joined_expected: presence ? announced : null,
    told_final_count: presence && n > p.roster_limit ? byCount.get(n) || 0 : null, // of n, by a summary
    summary_frames: presence ? summaryFrames : null,
    presence_frames_per_join: presence && n ? (joinedFrames + summaryFrames) / n : null,
    drained: presence ? drained : null,
    mib_received: bytes / 1048576,
    progress,
  };
}

module.exports = { cursors, bigRoom };
