// run.mjs - the chaos test (docs/guarantees.md, "Chaos test"). Three wsfan
// nodes on one redis-server (append-only file on, so that history survives
// its restarts), clients of clients/js/wsfan.js in rooms spread over the
// nodes, publishing persisted and ephemeral messages, and faults drawn from
// a seeded schedule for a fixed time. Then a quiet period, and every
// client's persisted messages against the rooms' histories in Redis.
// Writes build/chaos/chaos-<seed>.json and .md; exits 1 when a message was
// lost, duplicated, reordered or unknown, or a publish is in history twice
// or missing from it although acknowledged.
//
//   CHAOS_SECONDS (default 120)  the fault period
//   CHAOS_SEED (default random)  the schedule's and the traffic's seed
//   CHAOS_CLIENTS (default 300)  clients, two rooms each, ten per room on average
//   CHAOS_QUIET (default 30)     the longest wait for every client to settle after the faults
//
// Everything runs on the loopback, and every process is started here and
// stopped by its PID.
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import WebSocket from 'ws';

import { connect } from '../../clients/js/wsfan.js';
import { HOST, REPO, Redis, Server, sleep } from '../js/server.mjs';
import { between, faultSchedule, prng } from './schedule.mjs';
import { checkPublishes, checkRoomLog } from './verify.mjs';

const SECONDS = Number(process.env.CHAOS_SECONDS || 120);
const SEED = Number(process.env.CHAOS_SEED || Math.floor(Math.random() * 2 ** 31));
const CLIENTS = Number(process.env.CHAOS_CLIENTS || 300);
const QUIET = Number(process.env.CHAOS_QUIET || 30);
const NODES = 3;
const ROOMS = Math.max(2, Math.round(CLIENTS / 5)); // two rooms per client: ten members per room
const PUBLISH_MS = [2000, 6000]; // each client publishes persisted and ephemeral messages this often
const NODE_ARGS = ['--redis-timeout', '1000', '--redis-backoff-min', '50', '--redis-backoff-max', '500',
  '--history-length', '1000000', '--history-ttl', '0'];
const CLIENT_OPTIONS = { backoffMin: 100, backoffMax: 2000, timeout: 60000 };
const COMMAND = `CHAOS_SECONDS=${SECONDS} CHAOS_SEED=${SEED} CHAOS_CLIENTS=${CLIENTS} CHAOS_QUIET=${QUIET} node tests/chaos/run.mjs`;
const OUT = path.join(REPO, 'build', 'chaos');

const run = promisify(execFile);
const faultRandom = prng(SEED);
const trafficRandom = prng(SEED ^ 0x5bd1e995);
const redis = new Redis({ appendonly: true });
const nodes = [];
const users = [];
const publishes = []; // persisted: { id, room, outcome, offset, code }
const ephemeral = { acked: new Map(), received: new Map(), rejected: {} }; // room -> count; code -> count
const closeCodes = {};
let refuser; // a port that takes connections and drops them: where offline clients connect
let started;

const elapsed = () => Date.now() - started;
const count = (map, key) => map.set(key, (map.get(key) || 0) + 1);

function log(line) {
  console.log(`chaos ${(elapsed() / 1000).toFixed(1).padStart(6)}s  ${line}`);
}

// ---- processes ---------------------------------------------------------------

async function startRefuser() {
  refuser = net.createServer((s) => s.destroy());
  refuser.listen(0, HOST);
  await new Promise((resolve) => refuser.once('listening', resolve));
  return `ws://${HOST}:${refuser.address().port}/ws`;
}

async function startCluster() {
  await redis.start();
  for (let i = 0; i < NODES; i++) {
    nodes.push(await new Server({ args: ['--redis', redis.url, '--node-id', `chaos-${i}`, ...NODE_ARGS] }).start());
  }
}

/** Stops what was started, by PID; the nodes' exit codes (0 after SIGTERM). */
async function stopAll() {
  for (const u of users) u.client.close();
  const codes = [];
  for (const node of nodes) {
    if (node.proc.exitCode === null && node.proc.signalCode === null) node.signal('SIGCONT');
    codes.push(await node.stop());
  }
  if (redis.proc) await redis.stop();
  if (refuser) refuser.close();
  return codes;
}

// ---- clients -----------------------------------------------------------------

/** Destroys a client's TCP socket: no close frame, as a network failure. */
function hardKill(u) {
  const socket = u.client.socket && u.client.socket._socket;
  if (socket) socket.destroy();
}

function startClient(i, offlineUrl) {
  const rooms = [`room-${i % ROOMS}`, `room-${(i + between(trafficRandom, 1, ROOMS - 1)) % ROOMS}`];
  const u = { id: `u${i}`, node: i % NODES, rooms, logs: new Map(rooms.map((r) => [r, []])), offlineUntil: 0, timers: [] };
  // While offline, every connection attempt goes to the refuser.
  const OfflineAware = function (url, protocols) {
    return new WebSocket(Date.now() < u.offlineUntil ? offlineUrl : url, protocols);
  };
  u.client = connect(nodes[u.node].url, { user: u.id, WebSocket: OfflineAware, ...CLIENT_OPTIONS });
  u.client.on('roomMessage', (m) => {
    if (m.offset) u.logs.get(m.room).push({ kind: 'message', offset: m.offset, id: `${m.data.c}:${m.data.n}` });
    else count(ephemeral.received, m.room);
  });
  u.client.on('rejoined', (r) => {
    u.logs.get(r.room).push({ kind: 'join', offset: r.offset, recovered: r.recovered, missed: r.missed, at: Date.now() });
  });
  u.client.on('disconnected', ({ code }) => (closeCodes[code] = (closeCodes[code] || 0) + 1));
  users.push(u);
  return u;
}

async function joinRooms(u) {
  for (const room of u.rooms) {
    const first = { kind: 'join', offset: null, recovered: null, missed: 0, at: Date.now() };
    u.logs.get(room).push(first);
    first.offset = (await u.client.join(room)).offset;
  }
}

function startTraffic(u) {
  let n = 0;
  const every = (fn) => {
    const next = () => {
      u.timers.push(setTimeout(() => {
        fn(u.rooms[between(trafficRandom, 0, u.rooms.length - 1)], ++n);
        next();
      }, between(trafficRandom, ...PUBLISH_MS)));
    };
    next();
  };
  every((room, seq) => {
    const p = { id: `${u.id}:${seq}`, room, outcome: 'pending' };
    publishes.push(p);
    u.client.publish(room, { c: u.id, n: seq }).then(
      (ack) => Object.assign(p, { outcome: 'acked', offset: ack.offset }),
      (err) => Object.assign(p, { outcome: 'rejected', code: err.code }),
    );
  });
  every((room, seq) => {
    u.client.publish(room, { e: u.id, n: seq }, { ephemeral: true }).then(
      () => count(ephemeral.acked, room),
      (err) => (ephemeral.rejected[err.code] = (ephemeral.rejected[err.code] || 0) + 1),
    );
  });
}

function stopTraffic() {
  for (const u of users) for (const t of u.timers) clearTimeout(t);
}

// ---- faults ------------------------------------------------------------------

const FAULTS = {
  async drop({ drops }) {
    for (const { client, offline } of drops) {
      users[client].offlineUntil = Date.now() + offline;
      hardKill(users[client]);
    }
  },
  async slow({ client, duration }) {
    const socket = users[client].client.socket && users[client].client.socket._socket;
    if (!socket) return;
    socket.pause();
    await sleep(duration);
    socket.resume();
  },
  async kill({ node, duration }) {
    await nodes[node].kill();
    await sleep(duration);
    await nodes[node].start();
  },
  async pause({ node, duration }) {
    nodes[node].signal('SIGSTOP');
    await sleep(duration);
    nodes[node].signal('SIGCONT');
  },
  async redis({ duration }) {
    await redis.kill();
    await sleep(duration);
    await redis.start();
  },
};

function describeFault(f) {
  if (f.kind === 'drop') return `drop ${f.drops.map((d) => `u${d.client} (offline ${d.offline} ms)`).join(', ')}`;
  if (f.kind === 'slow') return `slow reader u${f.client} for ${f.duration} ms`;
  if (f.kind === 'redis') return `redis-server SIGKILL, restarted after ${f.duration} ms`;
  if (f.kind === 'kill') return `node ${f.node} SIGKILL, restarted after ${f.duration} ms`;
  return `node ${f.node} SIGSTOP, SIGCONT after ${f.duration} ms`;
}

/** Runs the schedule; resolves when every fault is over, the processes up again. */
async function injectFaults(schedule, t0) {
  const running = schedule.map(async (f) => {
    await sleep(Math.max(0, t0 + f.at - Date.now()));
    f.started = Date.now() - t0;
    log(describeFault(f));
    try {
      await FAULTS[f.kind](f);
    } catch (err) {
      f.error = String(err.message || err);
      log(`fault failed: ${f.error}`);
    }
    f.ended = Date.now() - t0;
  });
  await Promise.all(running);
}

// ---- Redis reads -------------------------------------------------------------

async function redisJson(...args) {
  const { stdout } = await run('redis-cli', ['-h', HOST, '-p', String(redis.port), '--json', ...args], { maxBuffer: 1 << 28 });
  return JSON.parse(stdout);
}

const streamKey = (room) => `wsfan:history:{${room}}`;

/** Every room's history: { offsets, ids: offset -> publish id }. */
async function readHistories() {
  const histories = new Map();
  for (let r = 0; r < ROOMS; r++) {
    const room = `room-${r}`;
    const entries = await redisJson('XRANGE', streamKey(room), '-', '+');
    const ids = new Map();
    for (const [offset, fields] of entries) {
      const data = JSON.parse(fields[fields.indexOf('d') + 1]);
      ids.set(offset, `${data.c}:${data.n}`);
    }
    histories.set(room, { offsets: entries.map(([offset]) => offset), ids });
  }
  return histories;
}

/** Waits until every client is connected, in its rooms, with no publish unanswered and
 * every room's newest message received; the number of clients still behind. */
async function settle(deadline) {
  for (;;) {
    const newest = new Map();
    for (let r = 0; r < ROOMS; r++) {
      const [top] = await redisJson('XREVRANGE', streamKey(`room-${r}`), '+', '-', 'COUNT', '1');
      newest.set(`room-${r}`, top && top[0]);
    }
    const pending = publishes.filter((p) => p.outcome === 'pending').length;
    const behind = users.filter((u) => u.client.state !== 'open' || u.rooms.some((room) => {
      const entry = u.client.rooms.get(room);
      return !entry || !entry.joined || (newest.get(room) && entry.offset !== newest.get(room));
    })).length;
    if ((!behind && !pending) || Date.now() > deadline) return { behind, pending };
    await sleep(500);
  }
}

// ---- the report --------------------------------------------------------------

function verify(histories) {
  const totals = { expected: 0, lost: 0, duplicated: 0, reordered: 0, unknown: 0, published: 0, delivered: 0,
    rejoinsRecovered: 0 };
  const recoveredFalse = [];
  const duplicates = []; // with the log of that client's room, in the JSON report
  for (const u of users) {
    for (const room of u.rooms) {
      const logs = u.logs.get(room);
      const history = histories.get(room);
      const r = checkRoomLog(logs, history);
      for (const k of ['expected', 'lost', 'duplicated', 'reordered', 'unknown', 'published', 'delivered']) totals[k] += r[k];
      totals.rejoinsRecovered += logs.filter((e) => e.recovered === true).length;
      for (const d of r.duplicates) duplicates.push({ client: u.id, room, ...d, log: logs });
      const falseJoins = logs.filter((e) => e.recovered === false);
      r.recoveredFalse.forEach(({ since, offset }, i) => {
        const reason = !history.ids.has(since) && since !== '0-0'
          ? 'since is not in the history (Redis lost it)'
          : 'unexplained: since is in the history';
        recoveredFalse.push({ client: u.id, room, at: falseJoins[i].at, since, offset, reason });
      });
    }
  }
  const stored = new Map();
  for (const h of histories.values()) for (const [offset, id] of h.ids) stored.set(id, [...(stored.get(id) || []), offset]);
  const pubs = checkPublishes(publishes, stored);
  let expectedEphemeral = 0;
  for (const [room, acked] of ephemeral.acked) expectedEphemeral += acked * users.filter((u) => u.rooms.includes(room)).length;
  const receivedEphemeral = [...ephemeral.received.values()].reduce((a, b) => a + b, 0);
  return { totals, recoveredFalse, duplicates, publishes: pubs, ephemeral: { acked: [...ephemeral.acked.values()].reduce((a, b) => a + b, 0),
    rejected: ephemeral.rejected, expected: expectedEphemeral, received: receivedEphemeral } };
}

/** "12 drop (30 clients), 5 slow, ..." */
function faultCounts(schedule) {
  const kinds = new Map();
  for (const f of schedule) count(kinds, f.kind);
  const dropped = schedule.filter((f) => f.kind === 'drop').reduce((n, f) => n + f.drops.length, 0);
  return [...kinds].map(([kind, n]) => (kind === 'drop' ? `${n} drop (${dropped} clients)` : `${n} ${kind}`)).join(', ');
}

const pct = (a, b) => (b ? `${((100 * a) / b).toFixed(2)}%` : 'n/a');

function markdown(report) {
  const { totals: t, publishes: p, ephemeral: e } = report.results;
  const rows = [
    ['lost (in covered stretches)', t.lost],
    ['duplicated', t.duplicated],
    ['reordered', t.reordered],
    ['received but not in the history', t.unknown],
    ['expected in covered stretches (client x room x message)', t.expected],
    ['rejoins answered recovered:true', t.rejoinsRecovered],
    ['rejoins answered recovered:false', report.results.recoveredFalse.length],
    ['persisted publishes: acknowledged / rejected / unanswered', `${p.acked} / ${JSON.stringify(p.rejected)} / ${p.pending}`],
    ['publishes in history twice or more', p.storedTwice],
    ['acknowledged publishes missing from history', p.ackedMissing],
    ['acks whose offset is not the first copy\'s', p.ackMismatch],
    ['rejected publishes stored anyway', p.rejectedStored],
    ['persisted delivery, all stretches', `${pct(t.delivered, t.published)} (${t.delivered} of ${t.published})`],
    ['ephemeral delivery', `${pct(e.received, e.expected)} (${e.received} of ${e.expected}; ${e.acked} acknowledged, rejected ${JSON.stringify(e.rejected)})`],
    ['client sockets closed, by code (failed connection attempts included)', JSON.stringify(report.closeCodes)],
    ['settled after the faults', report.settled.behind || report.settled.pending
      ? `no: ${report.settled.behind} clients behind, ${report.settled.pending} publishes unanswered after ${QUIET} s`
      : `yes, in ${report.settled.seconds} s`],
    ['node exit codes (SIGTERM at the end)', report.nodeExitCodes.join(', ')],
  ];
  const faults = report.schedule.map((f) =>
    `| ${(f.at / 1000).toFixed(1)} | ${(f.started / 1000).toFixed(1)} | ${(f.ended / 1000).toFixed(1)} | ${describeFault(f)}${f.error ? ` (failed: ${f.error})` : ''} |`);
  // Times in the tables are seconds into the fault period. An offset's first part is Redis's clock in ms.
  const second = (ms) => ((ms - report.faultsStarted) / 1000).toFixed(1);
  const faultSecond = (offset) => second(Number(offset.split('-')[0]));
  const twiceRows = p.twice.map((d) => `| ${d.id} | ${d.room} | ${d.offsets.map((o) => `${o} (${faultSecond(o)} s)`).join(', ')} | ${d.acked} |`);
  const dupRows = report.results.duplicates.map((d) => `| ${d.client} | ${d.room} | ${d.offset} (${faultSecond(d.offset)} s) | ` +
    `${d.join.recovered === null ? 'first join' : `recovered:${d.join.recovered}, missed ${d.join.missed}`} at ${second(d.join.at)} s |`);
  const falseRows = report.results.recoveredFalse.map((r) => `| ${r.client} | ${r.room} | ${second(r.at)} | ${r.since} | ${r.offset} | ${r.reason} |`);
  return [
    `# wsfan chaos test: ${report.verdict}`,
    '',
    `Seed ${report.seed}, ${report.date}. Command: \`${report.command}\``,
    '',
    `${NODES} nodes (\`${NODE_ARGS.join(' ')}\`), one redis-server with \`appendonly yes\`, ${CLIENTS} clients ` +
      `(${CLIENTS / NODES} per node) in ${ROOMS} rooms, two rooms each; each client publishes a persisted and an ` +
      `ephemeral message every ${PUBLISH_MS[0] / 1000} to ${PUBLISH_MS[1] / 1000} s; ${SECONDS} s of faults.`,
    '',
    '| check | result |',
    '| --- | --- |',
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    '',
    `## Faults: ${faultCounts(report.schedule)}`,
    '',
    '| planned (s) | started (s) | over (s) | fault |',
    '| --- | --- | --- | --- |',
    ...faults,
    '',
    `## Messages a client received twice (${dupRows.length})`,
    '',
    ...(dupRows.length ? ['| client | room | offset (second of the fault period) | the last joined reply before the second copy |',
      '| --- | --- | --- | --- |', ...dupRows] : ['None.']),
    '',
    `## Publishes stored more than once (${twiceRows.length})`,
    '',
    ...(twiceRows.length ? ['| publish | room | copies (offset, second of the fault period) | acknowledged offset |',
      '| --- | --- | --- | --- |', ...twiceRows] : ['None.']),
    '',
    `## Rejoins answered recovered:false (${falseRows.length})`,
    '',
    ...(falseRows.length ? ['| client | room | at (s) | since | offset | reason |', '| --- | --- | --- | --- | --- | --- |', ...falseRows] : ['None.']),
    '',
  ].join('\n');
}

// ---- the run -----------------------------------------------------------------

async function main() {
  started = Date.now();
  const schedule = faultSchedule({ seconds: SECONDS, clients: CLIENTS, nodes: NODES, random: faultRandom });
  log(`seed ${SEED}: ${CLIENTS} clients, ${ROOMS} rooms, ${NODES} nodes, ${SECONDS} s of faults (${schedule.length})`);
  const offlineUrl = await startRefuser();
  await startCluster();
  for (let i = 0; i < CLIENTS; i++) startClient(i, offlineUrl);
  await Promise.all(users.map(joinRooms));
  log('every client joined its rooms; traffic and faults start');
  users.forEach(startTraffic);
  const t0 = Date.now();
  await Promise.all([injectFaults(schedule, t0), sleep(SECONDS * 1000)]);
  stopTraffic();
  log('faults over, traffic stopped; waiting for the clients to settle');
  const quietStart = Date.now();
  const settled = await settle(quietStart + QUIET * 1000);
  settled.seconds = Math.round((Date.now() - quietStart) / 100) / 10;
  await sleep(500); // a duplicate would come right after the newest message
  const results = verify(await readHistories());
  const closes = { ...closeCodes }; // before the closes of the end
  const nodeExitCodes = await stopAll();
  const { totals: t, publishes: p } = results;
  const failed = t.lost + t.duplicated + t.reordered + t.unknown + p.storedTwice + p.ackedMissing + p.ackMismatch > 0 ||
    nodeExitCodes.some((c) => c !== 0);
  const report = { verdict: failed ? 'FAIL' : 'PASS', seed: SEED, date: new Date(started).toISOString(), command: COMMAND,
    config: { seconds: SECONDS, clients: CLIENTS, rooms: ROOMS, nodes: NODES, quiet: QUIET, nodeArgs: NODE_ARGS,
      clientOptions: CLIENT_OPTIONS, publishMs: PUBLISH_MS, redis: 'appendonly yes' },
    faultsStarted: t0, settled, closeCodes: closes, nodeExitCodes, results, schedule };
  mkdirSync(OUT, { recursive: true });
  const base = path.join(OUT, `chaos-${SEED}`);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${base}.md`, markdown(report));
  nodes.forEach((node, i) => writeFileSync(`${base}-node${i}.log`, node.log));
  console.log(`\n${markdown(report)}\nreport: ${base}.md and .json`);
  return failed ? 1 : 0;
}

// Bounded in time whatever happens: past it, stop everything and fail.
const watchdog = setTimeout(() => {
  console.error(`chaos: still running after ${SECONDS + QUIET + 120} s; stopping`);
  stopAll().finally(() => process.exit(2));
}, (SECONDS + QUIET + 120) * 1000);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => stopAll().finally(() => process.exit(130)));

main().then(
  (code) => {
    clearTimeout(watchdog);
    process.exit(code);
  },
  (err) => {
    console.error(err);
    stopAll().finally(() => process.exit(2));
  },
);
