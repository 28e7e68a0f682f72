'use strict';
// Node's `ws` with the broadcast loop from its README (one send() per client).
// Same minimal protocol as tornado-ws for the benchmark: the room is the path,
// a welcome frame on connect, every text frame relayed to the room, sender
// included, but a `signal` frame (issue #17's cursors) to the others only, as
// tornado-ws does; relayed as it comes, with no latest-wins. No token
// verification; permessage-deflate off, as in tornado-ws.
//   node server.js --port 8003
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
const WELCOME = '{"type":"welcome"}';
const SIGNAL = Buffer.from('{"type":"signal"');
const rooms = new Map();

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws, req) => {
  const room = req.url.split('?', 1)[0].split('/').pop();
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.send(WELCOME);
  ws.on('message', (data, isBinary) => {
    const skip = !isBinary && data.subarray(0, SIGNAL.length).equals(SIGNAL) ? ws : null;
    for (const client of members) {
      if (client !== skip && client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
});
wss.on('listening', () => process.stderr.write(`node-ws listening on http://127.0.0.1:${port}/\n`));
process.on('SIGTERM', () => process.exit(0));
