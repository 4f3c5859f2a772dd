"""examples/fastapi-chat: log in, get a wsfan token from the backend, connect
to wsfan with it, and receive the notification the backend publishes through
wsfan's HTTP API (POST /api/publish with "users")."""

import asyncio
import json
import secrets

import jwt
import pytest
import websockets

from conftest import HOST, REPO, Http, free_port, running, wait_http

EXAMPLE = REPO / "examples" / "fastapi-chat"
SECRET = secrets.token_hex(32)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app_port, wsfan_port = free_port(), free_port()
    env = {"APP_PORT": str(app_port), "WSFAN_PORT": str(wsfan_port), "WSFAN_JWT_SECRET": SECRET}
    with running(EXAMPLE / "run.sh", env, tmp_path_factory.mktemp("fastapi") / "run.log"):
        wait_http(f"http://{HOST}:{wsfan_port}/healthz")
        wait_http(f"http://{HOST}:{app_port}/healthz", timeout=15)
        yield f"http://{HOST}:{app_port}"


def login(app, user):
    tab = Http(app)
    assert tab.request("POST", "/login", {"user": user, "password": "demo"})[0] == 200
    return tab


async def next_event(ws, type_, timeout=5):
    """The next event of that type, skipping others (presence, acks)."""
    async def wait():
        while True:
            ev = json.loads(await ws.recv())
            if ev["type"] == type_:
                return ev
    return await asyncio.wait_for(wait(), timeout)


def test_the_page_and_the_client_are_served(app):
    status, page = Http(app).request("GET", "/")
    assert status == 200 and "import { connect } from '/wsfan.js'" in page
    status, js = Http(app).request("GET", "/wsfan.js")
    assert status == 200 and "export class WsfanClient" in js


def test_login_is_required(app):
    anonymous = Http(app)
    assert anonymous.request("POST", "/login", {"user": "alice", "password": "nope"})[0] == 401
    assert anonymous.request("GET", "/wsfan-token")[0] == 401
    assert anonymous.request("POST", "/notify", {"to": ["alice"], "text": "hi"})[0] == 401


def test_the_token_carries_the_claims_of_the_user(app):
    status, answer = login(app, "carol").request("GET", "/wsfan-token")
    assert status == 200
    claims = jwt.decode(answer["token"], SECRET, algorithms=["HS256"], issuer="fastapi-chat")
    assert claims["sub"] == "carol" and claims["exp"] == answer["exp"]
    assert claims["rooms"] == ["lobby"] and claims["publish"] == ["lobby"]
    assert claims["info"] == {"name": "Carol"}


def test_a_notification_reaches_the_user_through_wsfan(app):
    alice, bob = login(app, "alice"), login(app, "bob")
    status, token = alice.request("GET", "/wsfan-token")
    assert status == 200

    async def scenario():
        async with websockets.connect(f"{token['url']}?token={token['token']}") as ws:
            welcome = await next_event(ws, "welcome")
            assert welcome["user"] == "alice"
            # The token's rights hold: the lobby yes, another room no.
            await ws.send(json.dumps({"type": "join", "room": "lobby", "ref": 1}))
            assert (await next_event(ws, "joined"))["room"] == "lobby"
            await ws.send(json.dumps({"type": "join", "room": "staff", "ref": 2}))
            assert (await next_event(ws, "error"))["code"] == "forbidden"
            # Bob notifies alice through the backend, which publishes to wsfan.
            status, answer = await asyncio.to_thread(
                bob.request, "POST", "/notify", {"to": ["alice"], "text": "lunch?"})
            assert (status, answer) == (200, {"notified": ["alice"]})
            direct = await next_event(ws, "direct")
            assert direct["from"] is None  # published by the HTTP API
            assert direct["data"] == {"kind": "notification", "by": "bob", "text": "lunch?"}

    asyncio.run(scenario())


def test_notify_refuses_unknown_users(app):
    status, answer = login(app, "bob").request("POST", "/notify", {"to": ["mallory"], "text": "hi"})
    assert status == 400 and "mallory" in answer["detail"]
