"""A JSON client for the wsfan client protocol (PROTOCOL.md sections 2-4),
shared by test_protocol.py, test_rooms.py, test_ordering.py, test_history.py
and test_presence.py.

Replies to bus-backed commands (join, leave, publish, history, presence, send,
broadcast) can interleave with events, so a Client keeps every frame it reads:
recv_until() first looks at what was already read (the inbox), then reads more,
keeping the rest in the inbox in arrival order. `log` holds everything received
after the welcome, in order, for ordering checks.

Built on conftest.connect_json (python3-websockets 10.4, asyncio). Every wait
is bounded in time and every loop in count. Runs inside conftest.run().
"""

import asyncio
import contextlib
import itertools
import json
import re
import time
from typing import Callable, Optional

from conftest import SLOW, connect_json

ANY = object()   # "any value" for recv_until(ref=...)
REPLY_TYPES = ("joined", "left", "ack", "history", "presence", "pong", "refreshed", "error")
EVENT_TYPES = ("message", "direct", "broadcast", "presence_join", "presence_leave")
OFFSET_RE = re.compile(r"\d+-\d+")

_uniq = itertools.count(1)


def uniq(prefix: str) -> str:
    """A room or user name no other test of this process uses."""
    return f"{prefix}-{next(_uniq)}"


def offset_key(offset: str):
    """Offsets look like Redis stream ids "<ms>-<seq>" (PROTOCOL.md sections
    3 and 6); this orders them the way a stream orders its ids."""
    assert isinstance(offset, str) and OFFSET_RE.fullmatch(offset), f"not an offset: {offset!r}"
    ms, seq = offset.split("-")
    return int(ms), int(seq)


def same_json(a, b) -> bool:
    """Equality that also compares types (so 1 != 1.0 != True)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class Client:
    """One connection. .welcome, .user, .session, .worker come from the welcome."""

    def __init__(self, jc, label: str):
        self.jc = jc
        self.ws = jc.ws
        self.welcome = jc.welcome
        self.label = label
        self.inbox = []   # received and not taken yet, in arrival order
        self.log = []     # every message received after the welcome, in order
        self._refs = itertools.count(1)

    def __repr__(self):
        return f"<Client {self.label} session={self.session}>"

    @property
    def user(self):
        return self.welcome.get("user")

    @property
    def session(self) -> str:
        return self.welcome.get("session")

    @property
    def worker(self) -> str:
        """The <worker> part of the session id "<worker>.<seq>"."""
        return str(self.session).split(".")[0]

    def ref(self) -> str:
        return f"{self.label[:40]}#{next(self._refs)}"  # refs are at most 64 bytes

    # -- sending and receiving

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def _read(self, timeout: float):
        """One message from the socket into the log (not the inbox)."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"{self.label}: expected a text frame, got binary {raw[:80]!r}"
        msg = json.loads(raw)
        assert isinstance(msg, dict) and isinstance(msg.get("type"), str), \
            f"{self.label}: every server frame is a JSON object with a type: {raw[:300]!r}"
        self.log.append(msg)
        return msg

    def _take_first(self, pred):
        for i, m in enumerate(self.inbox):
            if pred(m):
                return self.inbox.pop(i)
        return None

    async def recv_match(self, pred: Callable, what: str, timeout: float = 5.0):
        """The first message (inbox first, then the socket) for which pred is
        true; the others stay in the inbox. Fails after timeout (scaled by SLOW)."""
        m = self._take_first(pred)
        if m is not None:
            return m
        deadline = time.monotonic() + timeout * SLOW
        for _ in range(1_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = await self._read(left)
            except asyncio.TimeoutError:
                break
            if pred(m):
                return m
            self.inbox.append(m)
        raise AssertionError(f"{self.label}: no {what} within {timeout * SLOW:.1f}s; "
                             f"unclaimed messages: {short(self.inbox)}")

    async def recv_until(self, type: str, ref=ANY, timeout: float = 5.0, **fields):
        """The first message of this type (and ref, and fields) to arrive."""
        def pred(m):
            if m.get("type") != type:
                return False
            if ref is not ANY and ("ref" not in m or not same_json(m["ref"], ref)):
                return False
            return all(k in m and same_json(m[k], v) for k, v in fields.items())
        desc = f"{type!r}" + ("" if ref is ANY else f" with ref {ref!r}") + \
               "".join(f" {k}={v!r}" for k, v in fields.items())
        return await self.recv_match(pred, desc, timeout)

    async def recv_n(self, pred: Callable, n: int, what: str, timeout: float = 5.0):
        """n messages matching pred, in arrival order."""
        out = []
        deadline = time.monotonic() + timeout * SLOW
        for _ in range(n):
            left = max(0.001, deadline - time.monotonic()) / SLOW
            try:
                out.append(await self.recv_match(pred, what, left))
            except AssertionError:
                raise AssertionError(f"{self.label}: got {len(out)} of {n} {what} within "
                                     f"{timeout * SLOW:.1f}s; unclaimed: {short(self.inbox)}") from None
        return out

    async def request(self, obj, timeout: float = 5.0):
        """Sends a command and returns its reply (a reply type or an error).
        With a ref in obj the reply is matched by ref; without one, by type."""
        await self.send(obj)
        if "ref" in obj:
            return await self.recv_match(
                lambda m: m.get("type") in REPLY_TYPES and "ref" in m and same_json(m["ref"], obj["ref"]),
                f"reply to {obj!r}", timeout)
        return await self.recv_match(lambda m: m.get("type") in REPLY_TYPES and "ref" not in m,
                                     f"reply to {obj!r}", timeout)

    async def ok(self, obj, reply_type: str, timeout: float = 5.0):
        """Sends obj (with a fresh ref unless it has one) and asserts the reply
        has reply_type."""
        if "ref" not in obj:
            obj = {**obj, "ref": self.ref()}
        r = await self.request(obj, timeout)
        assert r.get("type") == reply_type, f"{self.label}: {obj!r} should answer {reply_type!r}, got {r!r}"
        return r

    async def error(self, obj, code, timeout: float = 5.0):
        """Sends obj (with a fresh ref unless it has one) and asserts an error
        reply with code (a string or a set of acceptable codes)."""
        if "ref" not in obj:
            obj = {**obj, "ref": self.ref()}
        r = await self.request(obj, timeout)
        codes = {code} if isinstance(code, str) else set(code)
        assert r.get("type") == "error" and r.get("code") in codes, \
            f"{self.label}: {obj!r} should be refused with {sorted(codes)}, got {r!r}"
        return r

    # -- commands

    async def join(self, room: str, **kw):
        return await self.ok({"type": "join", "room": room, **kw}, "joined")

    async def leave(self, room: str):
        return await self.ok({"type": "leave", "room": room}, "left")

    async def publish(self, room: str, data, **kw):
        return await self.ok({"type": "publish", "room": room, "data": data, **kw}, "ack")

    async def history(self, room: str, **kw):
        return await self.ok({"type": "history", "room": room, **kw}, "history")

    async def presence(self, room: str):
        return await self.ok({"type": "presence", "room": room}, "presence")

    async def barrier(self):
        """A round trip through the bus (a send to a user nobody is): events
        that the bus handled before it reach this connection before the ack."""
        await self.ok({"type": "send", "user": "barrier.nobody", "data": None}, "ack")

    # -- what was received

    def take(self, pred: Callable = lambda m: True):
        """Removes and returns the inbox messages matching pred, in order."""
        out = [m for m in self.inbox if pred(m)]
        self.inbox = [m for m in self.inbox if not pred(m)]
        return out

    async def drain(self, settle: float = 0.1):
        """Reads into the inbox whatever arrives until settle seconds pass
        without a message (at most 2 s)."""
        deadline = time.monotonic() + 2.0 * SLOW
        for _ in range(100_000):
            left = min(settle * SLOW, deadline - time.monotonic())
            if left <= 0:
                return
            try:
                self.inbox.append(await self._read(left))
            except asyncio.TimeoutError:
                return

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5 * SLOW)


def short(msgs, n: int = 12) -> str:
    text = ", ".join(json.dumps(m)[:160] for m in msgs[:n])
    return f"[{text}{', ...' if len(msgs) > n else ''}] ({len(msgs)})"


async def connect(server, user: Optional[str] = None, label: Optional[str] = None, path: Optional[str] = None):
    """A Client for /ws?user=<user> (or /ws when user is None, or path)."""
    if path is None:
        path = "/ws" if user is None else f"/ws?user={user}"
    jc = await connect_json(server, path, max_queue=None)
    return Client(jc, label or user or f"anon{jc.welcome.get('session')}")


async def connect_on_other_worker(server, user: Optional[str], other_than, attempts: int = 40):
    """A connection whose worker (session prefix) differs from every one in
    other_than (a set of worker ids). Connects up to attempts times."""
    tried = []
    for _ in range(attempts):
        c = await connect(server, user)
        if c.worker not in other_than:
            for t in tried:
                await t.close()
            return c
        tried.append(c)
    for t in tried:
        await t.close()
    raise AssertionError(f"{attempts} connections all landed on workers {sorted(other_than)}; "
                         f"sessions {[t.session for t in tried]}")


@contextlib.asynccontextmanager
async def clients(server, *users, labels=None):
    """async with clients(srv, "alice", None, "bob") as (a, anon, b): ...
    Closes them all at the end."""
    made = []
    try:
        for i, u in enumerate(users):
            made.append(await connect(server, u, labels[i] if labels else None))
        yield made
    finally:
        await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


async def settle(cs, delay: float = 0.05):
    """Waits until what the bus did so far has reached every client: a bus
    round trip from each, then a short quiet period read into the inboxes."""
    await asyncio.gather(*(c.barrier() for c in cs))
    await asyncio.gather(*(c.drain(delay) for c in cs))


def events(c: Client, type: str, **fields):
    """Inbox messages of one type (and fields), not removed."""
    return [m for m in c.inbox if m.get("type") == type and all(same_json(m.get(k), v) for k, v in fields.items())]


def assert_keys(msg: dict, keys, what: str):
    assert set(msg) == set(keys), f"{what}: expected exactly the fields {sorted(keys)}, got {msg!r}"


def assert_ts(ts, what: str):
    now = time.time() * 1000
    assert type(ts) is int, f"{what}: ts should be an integer of milliseconds, got {ts!r}"
    assert abs(ts - now) < 60_000, f"{what}: ts {ts} should be the time in ms since the epoch (now {now:.0f})"
