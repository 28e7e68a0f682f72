'use strict';
// A minimal RFC 6455 client over net.Socket, built to be cheap per frame so one
// Node process can absorb a few hundred thousand deliveries a second:
// - no per-frame objects or UTF-8 decoding: frames are handed over as
//   (buffer, start, end) and the caller looks only at the bytes it needs;
// - sent frames use an all-zero mask key, so masking is a no-op copy;
// - the Sec-WebSocket-Accept value is not checked (we talk to our own peers).
// It is a load generator, not a general client: no extensions, no sending of
// fragmented frames; a fragmented message counts once, on its final frame.
const net = require('net');

const HANDSHAKE_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const HEADER_END = Buffer.from('\r\n\r\n');

/** One client frame (FIN set, zero mask key) around `payload`. */
function encodeFrame(opcode, payload) {
  const n = payload.length;
  let header;
  if (n < 126) {
    header = Buffer.alloc(6);
    header[1] = 0x80 | n;
  } else if (n < 65536) {
    header = Buffer.alloc(8);
    header[1] = 0x80 | 126;
    header.writeUInt16BE(n, 2);
  } else {
    header = Buffer.alloc(14);
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(n), 2);
  }
  header[0] = 0x80 | opcode;
  return Buffer.concat([header, payload]);
}

const CLOSE_NORMAL = encodeFrame(0x8, Buffer.from([0x03, 0xe8]));

class RawWs {
  /**
   * opts: {host, port, path, onOpen(ws), onText(ws, buf, start, end), onClose(ws)}
   * `onOpen` fires on the 101, `onClose` once, whatever the cause.
   */
  constructor(opts) {
    this.opts = opts;
    this.state = 'connecting';
    this.error = null;
    this.closeCode = null;
    this.closeSent = false;
    this.pending = null;
    this.head = null;
    this.tag = null; // free slot for the scenario (member index, ...)
    const sock = net.connect({ host: opts.host, port: opts.port });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on('connect', () => {
      this.state = 'handshake';
      sock.write(
        `GET ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    sock.on('data', (chunk) => this._onData(chunk));
    sock.on('error', (err) => {
      this.error = this.error || err.code || String(err);
    });
    sock.on('close', () => {
      const was = this.state;
      this.state = 'closed';
      if (was !== 'closed') opts.onClose(this);
    });
  }

  get open() {
    return this.state === 'open';
  }

  sendText(payload) {
    if (this.state !== 'open') return false;
    return this.sock.write(encodeFrame(0x1, payload));
  }

  /** Several text frames in one write (a page joining its sessions sends them together). */
  sendTexts(payloads) {
    if (this.state !== 'open') return false;
    return this.sock.write(Buffer.concat(payloads.map((payload) => encodeFrame(0x1, payload))));
  }

  /** Polite close: our close frame, then the server answers and drops TCP. */
  close() {
    if (this.state === 'open' && !this.closeSent) {
      this.closeSent = true;
      this.sock.write(CLOSE_NORMAL);
    } else if (this.state !== 'closed') {
      this.sock.destroy();
    }
  }

  /** Drop TCP without a close frame (end of run: faster, and servers must cope). */
  destroy() {
    this.sock.destroy();
  }

  _fail(reason) {
    this.error = this.error || reason;
    this.sock.destroy();
  }

  _onData(chunk) {
    if (this.state === 'handshake') {
      const head = this.head ? Buffer.concat([this.head, chunk]) : chunk;
      const end = head.indexOf(HEADER_END);
      if (end < 0) {
        if (head.length > 16384) this._fail('handshake: response headers too long');
        else this.head = head;
        return;
      }
      this.head = null;
      const status = head.toString('latin1', 0, Math.min(end, 64)).split('\r\n')[0];
      if (!status.startsWith('HTTP/1.1 101')) {
        this._fail(`handshake: ${status}`);
        return;
      }
      this.state = 'open';
      this.opts.onOpen(this);
      chunk = head.subarray(end + 4);
      if (chunk.length === 0) return;
    }
    if (this.pending) {
      chunk = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    const len = chunk.length;
    let off = 0;
    while (off + 2 <= len) {
      const b0 = chunk[off];
      const b1 = chunk[off + 1];
      let n = b1 & 0x7f;
      let hdr = 2;
      if (n === 126) {
        if (off + 4 > len) break;
        n = chunk.readUInt16BE(off + 2);
        hdr = 4;
      } else if (n === 127) {
        if (off + 10 > len) break;
        n = Number(chunk.readBigUInt64BE(off + 2));
        hdr = 10;
      }
      if (b1 & 0x80) {
        this._fail('protocol: server frame is masked');
        return;
      }
      if (off + hdr + n > len) break;
      const start = off + hdr;
      const stop = start + n;
      off = stop;
      const op = b0 & 0x0f;
      if (op <= 2) {
        if (b0 & 0x80) this.opts.onText(this, chunk, start, stop);
      } else if (op === 0x9) {
        if (this.state === 'open') this.sock.write(encodeFrame(0xa, chunk.subarray(start, stop)));
      } else if (op === 0x8) {
        this.closeCode = n >= 2 ? chunk.readUInt16BE(start) : 1005;
        if (!this.closeSent && this.state === 'open') {
          this.closeSent = true;
          this.sock.write(CLOSE_NORMAL);
        }
        this.sock.end();
        return;
      }
      if (this.state === 'closed') return;
    }
    if (off < len) this.pending = chunk.subarray(off);
  }
}

module.exports = { RawWs, encodeFrame };
