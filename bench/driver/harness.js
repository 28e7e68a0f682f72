'use strict';
// What every scenario needs: connecting many clients, measurement windows
// over server and driver CPU, waiting for traffic to drain, and the benchmark
// message format. Scenario logic lives in scenarios.js.
const { performance } = require('perf_hooks');
const { RawWs } = require('./rawws');
const { coreTicks, cpuMicros, mintToken, selfCpuMicros } = require('./stats');

const BT = Buffer.from('"bt":');
const SENDER = Buffer.from('"c":');
const WELCOME = Buffer.from('"welcome"');
const CONNECTED = Buffer.from('"connected"'); // the first frame of tornado-ws's /ws (no session yet)
const M = 0x6d; // 'm': `{"type":"message"...` has it at offset 9; welcome/presence/pong do not
const ERROR = Buffer.from('{"type":"error"'); // tornado-ws's error frame (e.g. `unavailable`: a publish was dropped)
const PAD = 'x'.repeat(4096);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

/** Parse the unsigned decimal right after `key` in frame [s, e); null when absent. */
function numberAfter(buf, s, e, key) {
  const i = buf.indexOf(key, s);
  if (i < 0 || i + key.length >= e) return null;
  let v = 0;
  let scale = 0;
  for (let j = i + key.length; j < e; j++) {
    const c = buf[j];
    if (c === 0x2e) {
      scale = 1;
      continue;
    }
    if (c < 0x30 || c > 0x39) break;
    v = v * 10 + (c - 0x30);
    if (scale) scale *= 10;
  }
  return scale ? v / scale : v;
}

/** Is frame [s, e) a `message` frame? Cheap: one byte, no decoding. */
const isMessage = (buf, s, e) => e - s > 10 && buf[s + 9] === M;

/** Publish text of `size` bytes carrying the send time and the sender's index (and `id`, if given). */
function messageFrame(size, sender, id) {
  const tag = id === undefined ? '' : `"id":"${id}",`;
  const head = `{"type":"message",${tag}"data":{"bt":${now().toFixed(3)},"c":${sender},"p":"`;
  const pad = Math.max(0, size - head.length - 3);
  return Buffer.from(`${head}${PAD.slice(0, pad)}"}}`);
}

class Ctx {
  constructor(cfg) {
    this.cfg = cfg;
    this.errors = 0;
    this.errorSamples = [];
    this.unexpectedCloses = 0;
    this.stopping = false;
    this.conns = new Set();
  }

  error(msg) {
    this.errors++;
    if (this.errorSamples.length < 5 && !this.errorSamples.includes(msg)) this.errorSamples.push(msg);
  }

  phase(name) {
    // The Python side watches stderr for these (e.g. to start py-spy).
    process.stderr.write(`PHASE ${name}\n`);
  }

  /**
   * Connect one client to `/ws/<room>`; resolves with it once the welcome frame arrived.
   * `room` null: tornado-ws's `/ws` (one socket, many sessions), whose first frame is `connected`.
   */
  connect(room, user, handlers, index = 0) {
    const { targets, jwt_secret: secret, org } = this.cfg;
    const target = targets[index % targets.length];
    const token = mintToken(secret, user, org);
    const first = room === null ? CONNECTED : WELCOME;
    return new Promise((resolve, reject) => {
      let welcomed = false;
      const ws = new RawWs({
        host: target.host,
        port: target.port,
        path: room === null ? `/ws?token=${token}` : `/ws/${room}?token=${token}`,
        onOpen() {},
        onText: (w, buf, s, e) => {
          if (welcomed) {
            // A server error frame means something the scenario sent was refused or dropped:
            // count it, or a closed loop would silently stall on it.
            const isError = e - s > ERROR.length && buf[s + 9] === 0x65; // 'e', then the exact prefix
            if (isError && buf.compare(ERROR, 0, ERROR.length, s, s + ERROR.length) === 0) {
              this.error(`server error frame: ${buf.toString('utf8', s, Math.min(e, s + 160))}`);
            }
            handlers.onText(w, buf, s, e);
            return;
          }
          welcomed = true;
          clearTimeout(timer);
          const i = buf.indexOf(first, s);
          if (i < 0 || i >= e) {
            w.destroy();
            reject(new Error(`first frame is not ${first}`));
          } else {
            resolve(w);
          }
        },
        onClose: (w) => {
          clearTimeout(timer);
          this.conns.delete(w);
          if (!welcomed) {
            reject(new Error(w.error || `closed before welcome (code ${w.closeCode})`));
          } else if (w.onClosed) {
            w.onClosed(w);
          } else if (!this.stopping) {
            this.unexpectedCloses++;
            this.error(`connection dropped (${w.error || `code ${w.closeCode}`})`);
          }
        },
      });
      this.conns.add(ws);
      const timer = setTimeout(() => {
        if (!welcomed) ws.destroy();
      }, this.cfg.connect_timeout_ms || 10000);
    });
  }

  /** Connect `n` clients, `concurrency` handshakes at a time; failures count as errors. */
  async connectMany(n, spec, handlers, concurrency = this.cfg.connect_concurrency || 64) {
    const out = new Array(n).fill(null);
    let next = 0;
    const worker = async () => {
      while (next < n) {
        const i = next++;
        const { room, user } = spec(i);
        try {
          out[i] = await this.connect(room, user, handlers, i);
          out[i].tag = i;
        } catch (err) {
          this.error(`connect: ${err.message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
    return out;
  }

  /** Close politely and resolve when the server dropped TCP (or after 5 s). */
  closeAndWait(ws) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        ws.destroy();
      }, 5000);
      ws.onClosed = () => {
        clearTimeout(timer);
        resolve();
      };
      ws.close();
    });
  }

  /** Wait until `done()` holds (checked every 5 ms), at most `maxMs`; false and an error if it never did. */
  async until(done, what, maxMs = 10000) {
    const start = now();
    while (!done()) {
      if (now() - start >= maxMs) {
        this.error(`${what} did not happen within ${maxMs} ms`);
        return false;
      }
      await sleep(5);
    }
    return true;
  }

  /** Wait until `counter()` stops moving for `idleMs` (traffic drained), at most `maxMs`. */
  async quiesce(counter, idleMs = 300, maxMs = 30000) {
    const start = now();
    let last = counter();
    let since = now();
    while (now() - start < maxMs) {
      await sleep(50);
      const c = counter();
      if (c !== last) {
        last = c;
        since = now();
      } else if (now() - since >= idleMs) {
        return true;
      }
    }
    this.error(`traffic did not drain within ${maxMs} ms`);
    return false;
  }

  /** Start a measurement window over server CPU, driver CPU and wall time. */
  window() {
    const { pids, clk_tck: clk, cores } = this.cfg;
    const t0 = now();
    const srv0 = cpuMicros(pids, clk);
    const drv0 = selfCpuMicros();
    const core0 = coreTicks(cores || []);
    return {
      end() {
        const seconds = (now() - t0) / 1000;
        const serverUs = cpuMicros(pids, clk) - srv0;
        const out = {
          seconds,
          server_cpu_us: serverUs,
          server_cpu_pct: (100 * serverUs) / (seconds * 1e6),
          driver_cpu_pct: (100 * (selfCpuMicros() - drv0)) / (seconds * 1e6),
        };
        // Whole-core busy %: includes softirq time (loopback TCP) that no process is charged for,
        // and anything else running there. ~100 on the server core = the server was the limit.
        coreTicks(cores || []).forEach((c, i) => {
          const total = c.total - core0[i].total;
          out[`core${i}_busy_pct`] = total ? (100 * (c.busy - core0[i].busy)) / total : null;
        });
        return out;
      },
    };
  }

  /** Send `rate` publishes per second for `seconds`, whatever the replies (open loop). */
  openLoop(rate, seconds, publish) {
    return new Promise((resolve) => {
      const t0 = now();
      let sent = 0;
      const timer = setInterval(() => {
        const elapsed = now() - t0;
        const due = Math.floor((Math.min(elapsed, seconds * 1000) / 1000) * rate);
        while (sent < due) publish(sent++);
        if (elapsed >= seconds * 1000) {
          clearInterval(timer);
          resolve(sent);
        }
      }, 2);
    });
  }

  destroyAll() {
    this.stopping = true;
    for (const ws of this.conns) ws.destroy();
    this.conns.clear();
  }
}

/** CPU figures of a measurement window: the processes, and their cores when pinned. */
const load = (w) => ({
  server_cpu_pct: w.server_cpu_pct,
  driver_cpu_pct: w.driver_cpu_pct,
  server_core_pct: w.core0_busy_pct,
  driver_core_pct: w.core1_busy_pct,
});

module.exports = { Ctx, SENDER, BT, isMessage, load, messageFrame, numberAfter, now, sleep };
