// schedule.mjs - the chaos test's seeded randomness: a small PRNG, and the
// fault schedule it draws before the run starts (so one seed is one
// schedule; the traffic draws from a second stream of the same seed).

/** mulberry32: a function returning numbers in [0, 1), the same for one seed. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [lo, hi]. */
export function between(random, lo, hi) {
  return lo + Math.floor(random() * (hi - lo + 1));
}

// Fault kinds with their weights, the range of their duration in ms, and,
// for those on a process, how long after it the process is left alone
// (a restarted node needs a moment before it can be hit again).
const KINDS = {
  drop: { weight: 4, ms: [0, 3000] }, // client sockets destroyed; each client offline that long
  slow: { weight: 2, ms: [2000, 10000] }, // one client stops reading its socket
  kill: { weight: 2, ms: [500, 3000], rest: 2000 }, // a node SIGKILLed, restarted on its port
  pause: { weight: 2, ms: [1000, 5000], rest: 1000 }, // a node SIGSTOPped, then SIGCONT
  redis: { weight: 2, ms: [500, 3000], rest: 2000 }, // redis-server SIGKILLed, restarted on its port
};

function pickKind(random) {
  let x = random() * Object.values(KINDS).reduce((sum, k) => sum + k.weight, 0);
  return Object.keys(KINDS).find((name) => (x -= KINDS[name].weight) < 0);
}

/** The kinds in a random order: the first faults of a run, so that every kind happens. */
function shuffledKinds(random) {
  const kinds = Object.keys(KINDS);
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = between(random, 0, i);
    [kinds[i], kinds[j]] = [kinds[j], kinds[i]];
  }
  return kinds;
}

/**
 * The faults of one run: [{ at, kind, ... }] in ms from the start of the
 * fault period, one every 1 to 4 s, each over before `seconds` end; the
 * first of them one of each kind. A process is never hit while an earlier
 * fault on it is still running.
 */
export function faultSchedule({ seconds, clients, nodes, random }) {
  const end = seconds * 1000;
  const busyUntil = new Map(); // "node1", "redis" -> ms
  const free = (target, at) => (busyUntil.get(target) || 0) <= at;
  const firsts = shuffledKinds(random);
  const faults = [];
  for (let at = between(random, 500, 2000); at < end; at += between(random, 1000, 4000)) {
    const kind = firsts.pop() || pickKind(random);
    const [lo, hi] = KINDS[kind].ms;
    if (kind === 'drop') {
      const count = between(random, 1, Math.max(1, Math.round(clients / 30)));
      const drops = [];
      for (let i = 0; i < count; i++) drops.push({ client: between(random, 0, clients - 1), offline: between(random, lo, hi) });
      faults.push({ at, kind, drops });
      continue;
    }
    const duration = Math.min(between(random, lo, hi), end - at);
    if (kind === 'slow') {
      faults.push({ at, kind, client: between(random, 0, clients - 1), duration });
    } else if (kind === 'redis') {
      if (!free('redis', at)) continue;
      busyUntil.set('redis', at + duration + KINDS[kind].rest);
      faults.push({ at, kind, duration });
    } else {
      const idle = [...Array(nodes).keys()].filter((n) => free(`node${n}`, at));
      if (!idle.length) continue;
      const node = idle[between(random, 0, idle.length - 1)];
      busyUntil.set(`node${node}`, at + duration + KINDS[kind].rest);
      faults.push({ at, kind, node, duration });
    }
  }
  return faults;
}
