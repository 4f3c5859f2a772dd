// verify.test.mjs - the chaos test's counts on small made-up logs, so that
// a clean run is clean because nothing went wrong, not because nothing
// was counted.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { checkPublishes, checkRoomLog, compareOffsets } from './verify.mjs';

/** A history of offsets "1-0", "2-0", ... each holding message "m<i>". */
function history(n) {
  const offsets = Array.from({ length: n }, (_, i) => `${i + 1}-0`);
  return { offsets, ids: new Map(offsets.map((o, i) => [o, `m${i + 1}`])) };
}

const join = (offset, recovered = null, missed = 0) => ({ kind: 'join', offset, recovered, missed });
const msg = (i) => ({ kind: 'message', offset: `${i}-0`, id: `m${i}` });

test('offsets compare as numbers, sequence second', () => {
  assert.ok(compareOffsets('9-0', '10-0') < 0);
  assert.ok(compareOffsets('10-2', '10-10') < 0);
  assert.equal(compareOffsets('5-1', '5-1'), 0);
});

test('everything after the join, once and in order, through a recovered rejoin: all zero', () => {
  const r = checkRoomLog([join('1-0'), msg(2), msg(3), join('5-0', true, 2), msg(4), msg(5), msg(6)], history(6));
  assert.deepEqual({ ...r, recoveredFalse: r.recoveredFalse.length, duplicates: r.duplicates.length },
    { expected: 5, lost: 0, duplicated: 0, reordered: 0, unknown: 0, recoveredFalse: 0, duplicates: 0, published: 5, delivered: 5 });
});

test('a gap inside a covered stretch is lost; one the rejoin said it could not recover is not', () => {
  const covered = checkRoomLog([join('0-0'), msg(1), msg(3), join('4-0', true, 1), msg(4)], history(4));
  assert.equal(covered.lost, 1);
  const told = checkRoomLog([join('0-0'), msg(1), join('4-0', false), msg(5)], history(5));
  assert.equal(told.lost, 0);
  assert.equal(told.expected, 2);
  assert.deepEqual(told.recoveredFalse, [{ since: '1-0', offset: '4-0' }]);
  assert.deepEqual([told.published, told.delivered], [5, 2]);
});

test('the tail after the last join must all arrive', () => {
  assert.equal(checkRoomLog([join('0-0'), msg(1), msg(2)], history(4)).lost, 2);
});

test('duplicates, reorders and messages that are not in the history are counted', () => {
  const r = checkRoomLog([join('0-0'), msg(1), msg(3), msg(2), msg(3), { kind: 'message', offset: '4-0', id: 'not m4' },
    { kind: 'message', offset: '9-0', id: 'x' }], history(4));
  assert.deepEqual([r.duplicated, r.reordered, r.unknown, r.lost], [1, 1, 2, 0]);
  assert.deepEqual(r.duplicates, [{ offset: '3-0', join: join('0-0') }]);
});

test('publishes: acknowledged once with the first offset, stored twice, missing, rejected but stored', () => {
  const stored = new Map([['a', ['1-0']], ['b', ['2-0', '3-0']], ['d', ['4-0']]]);
  const r = checkPublishes([
    { id: 'a', outcome: 'acked', offset: '1-0' },
    { id: 'b', room: 'r', outcome: 'acked', offset: '3-0' },
    { id: 'c', outcome: 'acked', offset: '5-0' },
    { id: 'd', outcome: 'rejected', code: 'timeout' },
    { id: 'e', outcome: 'pending' },
  ], stored);
  assert.deepEqual(r, { total: 5, acked: 3, pending: 1, rejected: { timeout: 1 }, storedTwice: 1, ackedMissing: 1,
    ackMismatch: 1, rejectedStored: 1, twice: [{ id: 'b', room: 'r', offsets: ['2-0', '3-0'], acked: '3-0' }] });
});
