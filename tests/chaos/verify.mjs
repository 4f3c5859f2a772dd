// verify.mjs - what the chaos test counts, as pure functions of what the
// clients logged and what the rooms' histories hold (docs/guarantees.md,
// "Chaos test", defines each count).

/** Orders two offsets "<ms>-<seq>" (negative, 0, positive). */
export function compareOffsets(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  return as < bs ? -1 : as > bs ? 1 : 0;
}

/**
 * One client's log of one room against the room's history.
 *
 * log, in arrival order: { kind: 'join', offset, recovered, missed } for
 * each joined reply (the first join has recovered null), and
 * { kind: 'message', offset, id } for each persisted message.
 * history: { offsets: [...] in stream order, ids: Map offset -> id }.
 *
 * A covered stretch starts at a join's offset (the first join, or a rejoin
 * that answered recovered:false) and runs on through every rejoin that
 * answered recovered:true. It ends at the newest offset the client received
 * before a recovered:false rejoin, or, for the last one, at the end of the
 * history. Every history offset inside a covered stretch must have been
 * received: those that were not are lost. A message received a second time
 * is duplicated; one older than a message received before it is reordered;
 * one whose offset is not in the history, or holds another message there,
 * is unknown. Each recovered:false rejoin is listed with the `since` the
 * client sent (the offset it had kept).
 */
export function checkRoomLog(log, history) {
  const seen = new Set();
  const stretches = [];
  const recoveredFalse = [];
  let start = null;
  let last = null; // the newest offset received in the current stretch
  let newest = null; // the newest offset received at all
  let since = null;
  const duplicates = []; // { offset, join }: the last joined reply before the second copy
  let lastJoin = null;
  let duplicated = 0;
  let reordered = 0;
  let unknown = 0;
  for (const e of log) {
    if (e.kind === 'join') {
      lastJoin = e;
      if (start === null) {
        start = e.offset;
      } else if (!e.recovered) {
        stretches.push([start, last || start]);
        recoveredFalse.push({ since, offset: e.offset });
        start = e.offset;
        last = null;
      }
      if (!e.recovered || e.missed === 0) since = e.offset;
      continue;
    }
    since = e.offset;
    if (seen.has(e.offset)) {
      duplicated++;
      duplicates.push({ offset: e.offset, join: lastJoin });
      continue;
    }
    seen.add(e.offset);
    if (history.ids.get(e.offset) !== e.id) unknown++;
    if (newest && compareOffsets(e.offset, newest) < 0) reordered++;
    else newest = e.offset;
    if (!last || compareOffsets(e.offset, last) > 0) last = e.offset;
  }
  stretches.push([start, null]);
  const inside = (o) => stretches.some(([from, to]) => compareOffsets(o, from) > 0 && (to === null || compareOffsets(o, to) <= 0));
  const expected = history.offsets.filter(inside);
  const afterFirstJoin = history.offsets.filter((o) => compareOffsets(o, log[0].offset) > 0);
  return {
    expected: expected.length,
    lost: expected.filter((o) => !seen.has(o)).length,
    duplicated,
    reordered,
    unknown,
    recoveredFalse,
    duplicates,
    // For the delivery rate, whatever the rejoins said: the history after
    // the first join, and how much of it arrived.
    published: afterFirstJoin.length,
    delivered: afterFirstJoin.filter((o) => seen.has(o)).length,
  };
}

/**
 * Every persisted publish against the histories. publishes: [{ id, room,
 * outcome: 'acked' | 'rejected' | 'pending', offset, code }]; stored:
 * Map id -> [offsets it has in the history]. `twice` lists the publishes
 * stored more than once.
 */
export function checkPublishes(publishes, stored) {
  const counts = { total: publishes.length, acked: 0, pending: 0, rejected: {}, storedTwice: 0, ackedMissing: 0,
    ackMismatch: 0, rejectedStored: 0, twice: [] };
  for (const p of publishes) {
    const offsets = stored.get(p.id) || [];
    if (offsets.length > 1) {
      counts.storedTwice++;
      counts.twice.push({ id: p.id, room: p.room, offsets, acked: p.offset });
    }
    if (p.outcome === 'acked') {
      counts.acked++;
      if (offsets.length === 0) counts.ackedMissing++;
      else if (offsets[0] !== p.offset) counts.ackMismatch++; // a retry's ack carries the first offset
    } else if (p.outcome === 'rejected') {
      counts.rejected[p.code] = (counts.rejected[p.code] || 0) + 1;
      if (offsets.length) counts.rejectedStored++;
    } else {
      counts.pending++;
    }
  }
  return counts;
}
