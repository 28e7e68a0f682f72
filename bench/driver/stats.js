'use strict';
// Measurement helpers: a fixed-bucket latency histogram, server CPU and RSS
// from /proc, and HS256 token minting (tornado-ws verifies every token; the
// naive peers ignore them).
const crypto = require('crypto');
const fs = require('fs');

/** Latency histogram, 20 µs buckets up to 5 s: O(1) record, no allocation. */
class Histogram {
  constructor(maxMs = 5000, bucketUs = 20) {
    this.bucketMs = bucketUs / 1000;
    this.buckets = new Uint32Array(Math.ceil(maxMs / this.bucketMs) + 1);
    this.reset();
  }

  reset() {
    this.buckets.fill(0);
    this.count = 0;
    this.max = 0;
    this.sum = 0;
  }

  record(ms) {
    if (ms < 0) ms = 0;
    const i = Math.min(this.buckets.length - 1, Math.floor(ms / this.bucketMs));
    this.buckets[i]++;
    this.count++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }

  percentile(p) {
    if (this.count === 0) return null;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i];
      if (seen >= rank) return (i + 1) * this.bucketMs; // upper edge: never flatters
    }
    return this.max;
  }

  summary() {
    return {
      samples: this.count,
      p50_ms: this.percentile(50),
      p99_ms: this.percentile(99),
      max_ms: this.count ? this.max : null,
      mean_ms: this.count ? this.sum / this.count : null,
    };
  }
}

/** utime + stime of every pid, in µs (clock ticks × 1e6 / CLK_TCK). */
function cpuMicros(pids, clkTck) {
  let ticks = 0;
  for (const pid of pids) {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces: count fields after its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1e6) / clkTck;
}

/** Busy and total jiffies of each listed core, from /proc/stat (idle and iowait are not busy). */
function coreTicks(cores) {
  const lines = fs.readFileSync('/proc/stat', 'latin1').split('\n');
  return cores.map((core) => {
    const line = lines.find((l) => l.startsWith(`cpu${core} `));
    if (!line) return { busy: 0, total: 0 };
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - v[3] - v[4], total };
  });
}

/** Resident set size of every pid, summed, in KiB. */
function rssKiB(pids) {
  let total = 0;
  for (const pid of pids) {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    if (m) total += Number(m[1]);
  }
  return total;
}

/** Own CPU (user + system) in µs, threads included. */
function selfCpuMicros() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

const JWT_HEADER = Buffer.from('{"alg":"HS256","typ":"JWT"}').toString('base64url');

function mintToken(secret, sub, org, ttlSeconds = 3600) {
  const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
  const body = Buffer.from(JSON.stringify({ sub, org, exp })).toString('base64url');
  const signingInput = `${JWT_HEADER}.${body}`;
  const sig = crypto.createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${sig}`;
}

module.exports = { Histogram, coreTicks, cpuMicros, rssKiB, selfCpuMicros, mintToken };
