'use strict';
// Fan-out: 1 room × N members, one of them publishes. `fanout` is the scenario
// of issue #7; `fanoutIds` runs its phases twice on the same server and the
// same connections, without and with an `id` on every publish (tornado-ws
// acknowledges each to the sender, issue #16), so the cost of ids is a ratio
// within one run.
const { Histogram } = require('./stats');
const { BT, isMessage, load, messageFrame, now, numberAfter, sleep } = require('./harness');

const ID = Buffer.from('"id":"');
const A = 0x61; // 'a': `{"type":"ack"...` has it at offset 9, no other server frame does
const RING = 1 << 16; // send times of id'd publishes, by id: far more than are ever in flight

const prefixed = (prefix, figures) => Object.fromEntries(Object.entries(figures).map(([k, v]) => [prefix + k, v]));

/** The room, its publisher and counters; phases of one fan-out run over them. */
function fanoutRig(ctx, p) {
  const hist = new Histogram();
  const ackHist = new Histogram();
  const sentAt = new Float64Array(RING);
  let msgs = 0;
  let other = 0;
  let sent = 0;
  let acks = 0;
  let idsSent = 0;
  let live = 0;
  let recording = false;
  let pumping = false;
  let withIds = false;
  let pub = null;
  const publish = () => {
    if (withIds) {
      sentAt[idsSent % RING] = now();
      pub.sendText(messageFrame(p.message_bytes, 0, idsSent++));
    } else {
      pub.sendText(messageFrame(p.message_bytes, 0));
    }
    sent++;
  };
  // Closed loop: at most `window` publishes not yet delivered to every member.
  const pump = () => {
    while (sent - msgs / live < p.window) publish();
  };
  const handlers = {
    onText(w, buf, s, e) {
      if (!isMessage(buf, s, e)) {
        if (buf[s + 9] === A) {
          acks++;
          if (recording) ackHist.record(now() - sentAt[numberAfter(buf, s, e, ID) % RING]);
        } else {
          other++;
        }
        return;
      }
      msgs++;
      if (recording) hist.record(now() - numberAfter(buf, s, e, BT));
      if (pumping) pump();
    },
  };

  return {
    get live() {
      return live;
    },
    get msgs() {
      return msgs;
    },
    get lost() {
      return sent * live - msgs;
    },
    get acksMissing() {
      return idsSent - acks;
    },
    /** Everything delivered (and, with `acked`, every id acknowledged). */
    drained(acked) {
      return msgs >= sent * live && (!acked || acks >= idsSent);
    },

    /** Connect the room; false when no member could connect. */
    async setup() {
      const conns = await ctx.connectMany(p.receivers, (i) => ({ room: 'fanout', user: `f${i}` }), handlers);
      live = conns.filter(Boolean).length;
      pub = conns.find(Boolean);
      if (!pub) return false;
      await ctx.quiesce(() => msgs + other); // tornado-ws: N joins are N² presence frames
      return true;
    },

    /** Closed loop for `warmup` + `duration` s; `drain` waits for the rest to arrive. */
    async saturate(ids, phase, drain) {
      withIds = ids;
      ctx.phase(phase);
      pumping = true;
      pump();
      await sleep(p.warmup * 1000);
      hist.reset();
      ackHist.reset();
      recording = true;
      const m0 = msgs;
      const win = ctx.window();
      await sleep(p.duration * 1000);
      const w = win.end();
      const delivered = msgs - m0;
      pumping = false;
      recording = false;
      ctx.phase(`${phase}-end`);
      await drain();
      return {
        deliveries_per_s: delivered / w.seconds,
        server_us_per_delivery: w.server_cpu_us / Math.max(1, delivered),
        ...load(w),
        sat_p50_ms: hist.percentile(50),
        sat_p99_ms: hist.percentile(99),
        ...(ids ? { ack_sat_p50_ms: ackHist.percentile(50), ack_sat_p99_ms: ackHist.percentile(99) } : {}),
      };
    },

    /** Open loop at `rate` msg/s for `latency_duration` s; the window includes `drain`. */
    async latency(ids, name, rate, drain) {
      withIds = ids;
      hist.reset();
      ackHist.reset();
      recording = true;
      const m0 = msgs;
      const win = ctx.window();
      const offered = await ctx.openLoop(rate, p.latency_duration, publish);
      await drain();
      const w = win.end();
      recording = false;
      const delivered = msgs - m0;
      return {
        [`${name}_rate_msgs`]: rate,
        [`${name}_deliveries_per_s`]: delivered / w.seconds,
        [`${name}_expected`]: offered * live,
        [`${name}_delivered`]: delivered,
        [`${name}_p50_ms`]: hist.percentile(50),
        [`${name}_p99_ms`]: hist.percentile(99),
        [`${name}_max_ms`]: hist.max,
        [`${name}_server_us_per_delivery`]: w.server_cpu_us / Math.max(1, delivered),
        [`${name}_driver_cpu_pct`]: w.driver_cpu_pct,
        [`${name}_server_core_pct`]: w.core0_busy_pct,
        ...(ids ? { [`ack_${name}_p50_ms`]: ackHist.percentile(50), [`ack_${name}_p99_ms`]: ackHist.percentile(99) } : {}),
      };
    },
  };
}

/** 1 room × N members, one of them publishes: max rate, then latency at fixed rates. */
async function fanout(ctx, p) {
  const rig = fanoutRig(ctx, p);
  if (!(await rig.setup())) return { receivers: 0 };
  const out = { receivers: rig.live };
  // Counting, not waiting for quiet (as fanoutIds): the next phase starts the moment the last frame is in.
  const drain = () => ctx.until(() => rig.drained(false), 'delivery of every message', 10000);
  // 1. Saturation, closed loop.
  Object.assign(out, await rig.saturate(false, 'saturate', drain));
  // 2. Latency at fixed offered rates, open loop: the same rate for everyone,
  //    then half of this server's own maximum.
  Object.assign(out, await rig.latency(false, 'fixed', p.fixed_rate, drain));
  Object.assign(out, await rig.latency(false, 'half', (0.5 * out.deliveries_per_s) / rig.live, drain));
  out.lost = rig.lost;
  return out;
}

/**
 * The fan-out without ids (as `fanout`), then with an `id` on every publish: max rate of each,
 * then the latency of each at the same offered rate (half of the max without ids). Peers
 * without acks relay the id'd frames like any other (their two runs show the noise).
 */
async function fanoutIds(ctx, p) {
  const acked = (ctx.cfg.features || []).includes('acks');
  const rig = fanoutRig(ctx, p);
  if (!(await rig.setup())) return { receivers: 0 };
  // Counting, not waiting for quiet: the next phase starts the moment the last frame is in.
  const drain = (ids) => () => ctx.until(() => rig.drained(ids && acked), 'delivery of every message (and ack)');
  const plain = await rig.saturate(false, 'saturate', drain(false));
  const ids = await rig.saturate(true, 'saturate-ids', drain(true));
  const rate = (0.5 * plain.deliveries_per_s) / rig.live;
  const plainHalf = await rig.latency(false, 'half', rate, drain(false));
  const idsHalf = await rig.latency(true, 'half', rate, drain(true));
  const ratio = (a, b) => (a != null && b ? a / b : null);
  return {
    receivers: rig.live,
    ...ids,
    ...idsHalf,
    ...prefixed('plain_', { ...plain, ...plainHalf }),
    ids_rate_ratio: ratio(ids.deliveries_per_s, plain.deliveries_per_s),
    ids_cpu_ratio: ratio(ids.server_us_per_delivery, plain.server_us_per_delivery),
    ids_p99_ratio: ratio(idsHalf.half_p99_ms, plainHalf.half_p99_ms),
    acks_missing: acked ? rig.acksMissing : null,
    lost: rig.lost,
  };
}

module.exports = { fanout, fanoutIds };
