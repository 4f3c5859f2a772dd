// socketio-server.js - the Socket.IO 4 peer of `make bench`: the smallest
// server that does what the wsfan scenarios need. A socket joins a room with
// a "join" event (answered with "joined"), and a "publish" event (room, data)
// is broadcast as "message" to every other socket in that room. With --redis
// the @socket.io/redis-adapter carries broadcasts between several processes.
// Listens on 127.0.0.1 only; WebSocket transport only, no compression.
//
//   node socketio-server.js --port 9100 [--redis redis://127.0.0.1:6390]
'use strict';

const http = require('http');
const { Server } = require('socket.io');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function main() {
  const port = Number(arg('--port', '9100'));
  const redisUrl = arg('--redis', '');
  const server = http.createServer();
  const io = new Server(server, {
    transports: ['websocket'],
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
    maxHttpBufferSize: 1e6,
  });
  if (redisUrl) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    pub.on('error', (e) => console.error('socketio-server: redis:', e.message));
    sub.on('error', (e) => console.error('socketio-server: redis:', e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on('connection', (socket) => {
    socket.on('join', (room) => {
      if (typeof room !== 'string') return;
      socket.join(room);
      socket.emit('joined', room);
    });
    socket.on('publish', (room, data) => {
      if (typeof room !== 'string') return;
      socket.to(room).emit('message', data);
    });
  });
  server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
    console.error(`socketio-server: listening on 127.0.0.1:${port}${redisUrl ? ' with ' + redisUrl : ''}`);
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error('socketio-server:', e.message);
  process.exit(1);
});
