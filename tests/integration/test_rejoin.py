"""A join sent again while the first one is still on its way is answered
after it: replies come in the order of the commands, with either engine."""
import pytest

from conftest import redis_node, run
from protocol_client import connect, uniq


@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_second_join_of_a_pending_room_is_answered_after_the_first(engine, wsfan, redis_factory):
    node = wsfan("--workers", "2") if engine == "memory" else redis_node(wsfan, redis_factory(), "rj")
    room = uniq("rj")

    async def scenario():
        c = await connect(node, uniq("u"))
        try:
            for ref in ("first", "second", "third"):
                await c.send({"type": "join", "room": room, "ref": ref})
            return await c.recv_n(lambda m: m["type"] == "joined", 3, "joined replies")
        finally:
            await c.close()

    replies = run(scenario())
    assert [m["ref"] for m in replies] == ["first", "second", "third"], \
        f"joined replies in the order of the joins: {replies}"
    assert isinstance(replies[0]["offset"], str), f"the first join is the real one: {replies[0]}"
    for m in replies[1:]:
        assert m["offset"] is None and m["recovered"] is True and m["missed"] == 0, \
            f"a join of a room already joined changes nothing: {m}"
