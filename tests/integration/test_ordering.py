"""Delivery order across workers (PROTOCOL.md sections 2 and 3): 50 clients
over --workers 4 in one room, 5 of them publishing 40 messages each at the same
time. Every client gets all 200 exactly once, all in the same order, each
publisher's messages in the order it published them, with offsets increasing
in delivery order and equal to the publishers' acks. On both engines (the
`engine` fixture of conftest.py); publishers on several nodes are in
test_redis_delivery.py."""

import asyncio

from conftest import run
from protocol_client import connect, offset_key, uniq

N_CLIENTS, N_PUBLISHERS, PER_PUBLISHER = 50, 5, 40


def test_fifty_clients_see_two_hundred_concurrent_messages_in_one_order(engine, wsfan):
    srv = engine.node(wsfan, "--workers", "4")
    room = uniq("order")
    total = N_PUBLISHERS * PER_PUBLISHER

    async def publish_all(p, index):
        """Sends all 40 publishes without waiting, then collects the 40 acks."""
        refs = [f"p{index}-{k}" for k in range(PER_PUBLISHER)]
        for k, ref in enumerate(refs):
            await p.send({"type": "publish", "room": room, "ref": ref, "data": {"p": index, "k": k}})
        acks = []
        for ref in refs:
            r = await p.recv_until("ack", ref=ref, timeout=15)
            acks.append(r)
        return acks

    async def scenario():
        cs = []
        try:
            for i in range(N_CLIENTS):
                cs.append(await connect(srv, uniq("o") if i % 2 else None, label=f"c{i}"))
            for c in cs:
                await c.join(room)
            publishers = cs[::N_CLIENTS // N_PUBLISHERS][:N_PUBLISHERS]
            acks = await asyncio.gather(*(publish_all(p, i) for i, p in enumerate(publishers)))
            got = await asyncio.gather(*(c.recv_n(lambda m: m["type"] == "message", total, "messages", timeout=20)
                                         for c in cs))
            # Anything beyond the 200 would be a duplicate: give it a moment to show.
            await asyncio.gather(*(c.drain(0.1) for c in cs))
            extra = {c.label: [m for m in c.inbox if m["type"] == "message"] for c in cs}
            return [c.worker for c in cs], acks, got, extra
        finally:
            await asyncio.gather(*(c.close() for c in cs), return_exceptions=True)

    workers, acks, got, extra = run(scenario(), timeout=60)
    assert len(set(workers)) == 4, f"50 connections should land on all 4 workers: {sorted(set(workers))}"

    ack_offsets = {(i, k): a["offset"] for i, pa in enumerate(acks) for k, a in enumerate(pa)}
    for i, pa in enumerate(acks):
        keys = [offset_key(a["offset"]) for a in pa]
        assert keys == sorted(keys) and len(set(keys)) == PER_PUBLISHER, \
            f"publisher {i}: ack offsets should increase in publish order: {[a['offset'] for a in pa]}"

    reference = [(m["data"]["p"], m["data"]["k"]) for m in got[0]]
    for c, msgs in enumerate(got):
        seq = [(m["data"]["p"], m["data"]["k"]) for m in msgs]
        assert len(set(seq)) == total, f"client c{c} got duplicates: {total - len(set(seq))} repeated"
        assert sorted(seq) == sorted(ack_offsets), f"client c{c} did not get every message exactly once"
        for p in range(N_PUBLISHERS):
            ks = [k for (q, k) in seq if q == p]
            assert ks == list(range(PER_PUBLISHER)), f"client c{c}: publisher {p}'s messages out of order: {ks}"
        assert seq == reference, (f"client c{c} (worker {workers[c]}) saw another order than c0 (worker "
                                  f"{workers[0]}); first difference at position "
                                  f"{next(i for i, (x, y) in enumerate(zip(seq, reference)) if x != y)}")
        offsets = [m["offset"] for m in msgs]
        assert [offset_key(o) for o in offsets] == sorted(offset_key(o) for o in offsets), \
            f"client c{c}: offsets should increase in delivery order"
        for m in msgs:
            assert m["offset"] == ack_offsets[(m["data"]["p"], m["data"]["k"])], \
                f"client c{c}: message {m['data']} has offset {m['offset']}, its ack said " \
                f"{ack_offsets[(m['data']['p'], m['data']['k'])]}"
    for label, e in extra.items():
        assert not e, f"{label} got more than the 200 messages: {e[:3]}"
