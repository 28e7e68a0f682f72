'use strict';
// tornado-ws's `/ws` (issue #16): one socket in many sessions. The server's
// memory per membership against its memory per `/ws/<id>` socket (today's way
// to be in one more session, and the only one the peers have), and the time a
// socket takes to join its sessions.
const { rssKiB } = require('./stats');
const { load, now, sleep } = require('./harness');

const W = 0x77; // 'w' at offset 9: `{"type":"welcome"...`, a join answered
const L = 0x6c; // 'l': `{"type":"left"...`, a join refused (there are no leaves here)

/** The q-th percentile of ascending `sorted` (nearest rank), null when empty. */
const percentile = (sorted, q) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1))] : null;

/**
 * 1. `single_connections` sockets to `/ws/<id>` in rooms of `members` (as the idle scenario): RSS per socket.
 * 2. Peers with `/ws` only: `connections` sockets to `/ws`, each joining `sessions` sessions, the
 *    sessions of its group of `members` sockets (so every session has `members` members, as in 1):
 *    RSS per membership over the connected sockets; the first socket joins alone (timed), the
 *    others `join_concurrency` at a time, until all joined or `join_budget_s` is spent.
 */
async function multiplex(ctx, p) {
  const { pids } = ctx.cfg;
  let frames = 0;
  const counted = {
    onText() {
      frames++;
    },
  };
  const rss0 = rssKiB(pids);
  const t0 = now();
  const singles = await ctx.connectMany(
    p.single_connections,
    (i) => ({ room: `s${Math.floor(i / p.members)}`, user: `s${i}` }),
    counted,
  );
  const connectSeconds = (now() - t0) / 1000;
  const single = singles.filter(Boolean).length;
  await ctx.quiesce(() => frames);
  await sleep(p.settle * 1000);
  const rss1 = rssKiB(pids);
  const out = {
    single_connections: single,
    kib_per_connection: single ? (rss1 - rss0) / single : null,
    connect_per_s: single / connectSeconds,
  };
  if (!(ctx.cfg.features || []).includes('multiplex')) return out;

  const joined = new Array(p.connections).fill(0); // answers (welcome or left) per socket
  const done = new Array(p.connections).fill(null);
  let firstWelcomeAt = null;
  let welcomes = 0;
  const handlers = {
    onText(w, buf, s, e) {
      frames++;
      const t = buf[s + 9];
      if (t === W) {
        welcomes++;
        if (firstWelcomeAt === null) firstWelcomeAt = now();
      } else if (t === L) {
        ctx.error(`join refused: ${buf.toString('utf8', s, Math.min(e, s + 160))}`);
      } else {
        return;
      }
      if (++joined[w.tag] === p.sessions && done[w.tag]) done[w.tag]();
    },
  };
  /** Send all of a socket's joins in one write; resolve with the ms until the last answer (null: not all came). */
  const join = (ws) =>
    new Promise((resolve) => {
      const c = ws.tag;
      const group = Math.floor(c / p.members);
      const started = now();
      const timer = setTimeout(() => {
        done[c] = null;
        ctx.error(`${joined[c]} of ${p.sessions} joins answered within ${p.join_timeout_s} s`);
        resolve(null);
      }, p.join_timeout_s * 1000);
      done[c] = () => {
        clearTimeout(timer);
        resolve(now() - started);
      };
      ws.sendTexts(Array.from({ length: p.sessions }, (_, j) => Buffer.from(`{"type":"join","session":"m${group}-${j}"}`)));
    });

  const socks = (await ctx.connectMany(p.connections, (i) => ({ room: null, user: `m${i}` }), handlers)).filter(
    Boolean,
  );
  if (socks.length === 0) return out;
  await ctx.quiesce(() => frames);
  const rss2 = rssKiB(pids);

  ctx.phase('join');
  const win = ctx.window();
  const soloStart = now();
  const solo = await join(socks[0]);
  const soloFirst = firstWelcomeAt === null ? null : firstWelcomeAt - soloStart;
  const soloWelcomes = welcomes;
  const times = [];
  const rest = socks.slice(1);
  let next = 0;
  const bulkStart = now();
  const deadline = bulkStart + p.join_budget_s * 1000;
  const worker = async () => {
    while (next < rest.length && now() < deadline) {
      const ms = await join(rest[next++]);
      if (ms !== null) times.push(ms);
    }
  };
  await Promise.all(Array.from({ length: Math.min(p.join_concurrency, rest.length) }, worker));
  const bulkSeconds = (now() - bulkStart) / 1000;
  await ctx.quiesce(() => frames); // the presence frames to the other members
  const w = win.end();
  await sleep(p.settle * 1000);
  const rss3 = rssKiB(pids);
  times.sort((a, b) => a - b);
  const memberships = welcomes;
  const perMembership = memberships ? (rss3 - rss2) / memberships : null;
  return {
    ...out,
    connections: socks.length,
    memberships,
    kib_per_ws_connection: (rss2 - rss1) / socks.length,
    kib_per_membership: perMembership,
    membership_vs_connection: perMembership !== null && out.kib_per_connection ? perMembership / out.kib_per_connection : null,
    solo_join_ms: solo,
    solo_first_welcome_ms: soloFirst,
    bulk_connections: times.length,
    join_p50_ms: percentile(times, 50),
    join_p99_ms: percentile(times, 99),
    join_max_ms: times.length ? times[times.length - 1] : null,
    joins_per_s: rest.length ? (memberships - soloWelcomes) / bulkSeconds : null,
    server_us_per_join: w.server_cpu_us / Math.max(1, memberships),
    ...load(w),
  };
}

module.exports = { multiplex };
