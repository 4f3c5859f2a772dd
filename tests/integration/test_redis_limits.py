"""Limits that only a slow bus can reach: a connection that keeps sending
commands while Redis does not answer has its input wait once 1024 of its
commands wait for the bus (TCP pushes back on it); when replies come, the
rest is read and run. No command is refused, and the connection stays open
and served."""
import threading

from conftest import redis_node, run
from protocol_client import connect, uniq

PENDING_MAX = 1024


def test_commands_past_1024_waiting_on_a_paused_redis_wait_too(redis_server, wsfan):
    # More than 1024 commands at once, on purpose: --rate-limit is off here
    # so that only the limit of commands waiting for the bus applies.
    node = redis_node(wsfan, redis_server, "lim-a", "--rate-limit", "0")
    room = uniq("lim")
    total = PENDING_MAX + 200

    async def scenario():
        c = await connect(node, uniq("pub"))
        try:
            await c.join(room)
            # CLIENT PAUSE holds every command of every client (the node's
            # links included) for a while, so publishes pile up waiting.
            admin = redis_server.client()
            pauser = threading.Thread(target=lambda: admin.execute_command("CLIENT", "PAUSE", "2500", "ALL"))
            pauser.start()
            pauser.join()
            for i in range(total):
                await c.send({"type": "publish", "room": room, "data": i, "ref": i})
            got = await c.recv_n(lambda m: m.get("type") in ("ack", "error") and isinstance(m.get("ref"), int),
                                 total, "replies to the publishes", timeout=20)
            replies = {m["ref"]: m for m in got}
            pong = await c.request({"type": "ping", "ref": "after"})
            return replies, pong
        finally:
            await c.close()

    replies, pong = run(scenario(), timeout=40)
    acked = sorted(r for r, m in replies.items() if m["type"] == "ack")
    assert len(replies) == total, f"every command gets a reply: {total - len(replies)} missing"
    assert acked == list(range(total)), \
        f"every command is run, none refused: {[m for m in replies.values() if m['type'] != 'ack'][:3]}"
    assert pong["type"] == "pong", f"the connection stays open and served: {pong}"
