"""examples/express-notifications: a user connects to wsfan (run with --redis)
with a token from the Express server, and the notification the server
PUBLISHes straight into Redis arrives as a `direct` event."""

import asyncio
import json
import time

import pytest
import redis
import websockets

from conftest import HOST, REPO, Http, free_port, running, wait_http

EXAMPLE = REPO / "examples" / "express-notifications"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    ports = {"APP_PORT": free_port(), "WSFAN_PORT": free_port(), "REDIS_PORT": free_port()}
    env = {name: str(port) for name, port in ports.items()}
    with running(EXAMPLE / "run.sh", env, tmp_path_factory.mktemp("express") / "run.log"):
        wait_http(f"http://{HOST}:{ports['WSFAN_PORT']}/readyz")  # connected to Redis
        wait_http(f"http://{HOST}:{ports['APP_PORT']}/healthz", timeout=15)
        yield f"http://{HOST}:{ports['APP_PORT']}", redis.Redis(HOST, ports["REDIS_PORT"])


def as_user(base, user):
    return Http(base, {"X-Demo-User": user})


def test_a_notification_goes_through_redis_to_the_user(example):
    base, rds = example
    status, token = as_user(base, "bob").request("GET", "/token")
    assert status == 200
    alice = as_user(base, "alice")
    watcher = rds.pubsub()  # sees what the Express server publishes
    watcher.subscribe("wsfan:user:{bob}")
    assert watcher.get_message(timeout=2)["type"] == "subscribe"

    async def scenario():
        async with websockets.connect(f"{token['url']}?token={token['token']}") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["user"] == "bob"
            # Bob's node subscribes to his channel as he connects: until it
            # has, PUBLISH reaches no wsfan node (and the answer says 0).
            deadline = time.monotonic() + 5
            while True:
                status, answer = await asyncio.to_thread(
                    alice.request, "POST", "/notify", {"to": ["bob"], "text": "build is green"})
                assert status == 200
                if answer["nodes"]["bob"] == 2:  # the node and this test's watcher
                    break
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.05)
            direct = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert direct["type"] == "direct" and direct["from"] is None
            assert direct["data"] == {"kind": "notification", "by": "alice", "text": "build is green"}

    asyncio.run(scenario())
    # What went through Redis is the whole envelope a service needs.
    message = watcher.get_message(timeout=2)
    assert message and json.loads(message["data"]) == {"data": {"kind": "notification", "by": "alice", "text": "build is green"}}
    watcher.close()


def test_the_token_is_verified_by_wsfan(example):
    base, _ = example
    status, token = as_user(base, "carol").request("GET", "/token")

    async def connect(t):
        async with websockets.connect(f"{token['url']}?token={t}") as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert asyncio.run(connect(token["token"]))["user"] == "carol"
    with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
        asyncio.run(connect(token["token"][:-2] + "AA"))
    assert refused.value.status_code == 401


def test_bad_requests_are_refused(example):
    base, _ = example
    assert Http(base).request("GET", "/token")[0] == 401
    alice = as_user(base, "alice")
    assert alice.request("POST", "/notify", {"to": ["no spaces"], "text": "x"})[0] == 400
    assert alice.request("POST", "/notify", {"to": [], "text": "x"})[0] == 400
    assert alice.request("POST", "/notify", {"to": ["bob"]})[0] == 400
