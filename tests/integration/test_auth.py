"""Authentication and permissions (docs/protocol.md section 1a) over the wire:
--auth jwt with HS256, RS256 and ES256 keys; every kind of bad token refused
with 401 and a one-line body naming it; the claims rooms, publish, send,
broadcast allowing and refusing, with nothing leaked from a room the
connection may not read; anonymous connections; ?user= refused in mode jwt;
expiry closing with 1008; refresh; configuration errors at start; and
`wsfan token`. Tokens are minted with Debian's python3-jwt and keys made with
python3-cryptography."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import (SLOW, assert_one_line_body, connect_json, http_request, request_head, run, run_wsfan,
                      upgrade_headers)
from protocol_client import Client, connect, uniq

SECRET = "test-secret-0123456789abcdef-0123456789"


# ---- keys and tokens -----------------------------------------------------------

def _pem_public(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_private(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """RSA 2048 and EC P-256 key pairs (plus a second RSA key and keys the
    server must refuse), each public key in a PEM file."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    made = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ec384": ec.generate_private_key(ec.SECP384R1()),
        "rsa1024": rsa.generate_private_key(public_exponent=65537, key_size=1024),
    }
    for name, key in made.items():
        pub = d / f"{name}.pub.pem"
        pub.write_bytes(_pem_public(key))
        priv = d / f"{name}.pem"
        priv.write_bytes(_pem_private(key))
        out[name] = {"key": key, "private": _pem_private(key), "public": _pem_public(key), "pub_path": str(pub),
                     "priv_path": str(priv)}
    return out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, claims: dict, sig: bytes = b"") -> str:
    """A token assembled by hand, for what a library refuses to make."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(sig)}"


def hs_forged(claims: dict, key: bytes) -> str:
    """An HS256 token whose HMAC key is key: a public key's PEM text, for
    the algorithm confusion attack."""
    head = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{head}.{b64(hmac.new(key, head.encode(), hashlib.sha256).digest())}"


def claims(sub="alice", ttl=3600, **kw) -> dict:
    now = int(time.time())
    out = {"sub": sub, "iat": now}
    if ttl is not None:
        out["exp"] = now + ttl
    out.update(kw)
    return {k: v for k, v in out.items() if v is not None}


def hs(secret=SECRET, **kw) -> str:
    return jwt.encode(claims(**kw), secret, algorithm="HS256")


def signed(key, alg, **kw) -> str:
    return jwt.encode(claims(**kw), key["private"], algorithm=alg)


# ---- servers ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hs_server(wsfan_module):
    """HS256 from WSFAN_JWT_SECRET; no --allow-broadcast (in mode jwt the claim decides)."""
    return wsfan_module("--auth", "jwt", env={"WSFAN_JWT_SECRET": SECRET})


@pytest.fixture(scope="module")
def rs_server(wsfan_module, keys):
    return wsfan_module("--auth", "jwt", "--jwt-public-key", keys["rsa"]["pub_path"])


@pytest.fixture(scope="module")
def es_server(wsfan_module, keys):
    return wsfan_module("--auth", "jwt", "--jwt-public-key", keys["ec"]["pub_path"])


@pytest.fixture(scope="module")
def aud_server(wsfan_module):
    return wsfan_module("--auth", "jwt", "--jwt-audience", "chat.example.com", "--jwt-issuer", "auth.example.com",
                        env={"WSFAN_JWT_SECRET": SECRET})


@pytest.fixture(scope="module")
def anon_server(wsfan_module):
    return wsfan_module("--auth", "jwt", "--allow-anonymous", "--anonymous-rooms", "lobby,public:*",
                        env={"WSFAN_JWT_SECRET": SECRET})


@pytest.fixture(scope="module")
def quick_server(wsfan_module):
    """--jwt-leeway 0, for expiry."""
    return wsfan_module("--auth", "jwt", "--jwt-leeway", "0", env={"WSFAN_JWT_SECRET": SECRET})


def handshake(server, path="/ws", headers=()):
    return http_request(server.port, request_head("GET", path, upgrade_headers(extra=list(headers))))


def assert_refused(server, token, status, reason_words, path=None, headers=()):
    resp = handshake(server, path or f"/ws?token={token}", headers)
    assert resp.status == status, (f"token {token!r} should be refused with {status}, got {resp.status}: "
                                   f"{resp.head!r} {resp.body!r}")
    assert_one_line_body(resp)
    body = resp.body.decode().lower()
    for w in reason_words:
        assert w in body, f"the {status} body should say {w!r}: {resp.body!r}"
    return resp


async def connect_token(server, token, label=None) -> Client:
    return await connect(server, path=f"/ws?token={token}", label=label or uniq("tok"))


# ---- the handshake ----------------------------------------------------------------

def test_token_in_query_names_the_user_and_welcome_carries_exp(hs_server):
    async def go():
        tok_claims = claims(sub="alice")
        c = await connect_token(hs_server, jwt.encode(tok_claims, SECRET, algorithm="HS256"))
        assert c.welcome["user"] == "alice", c.welcome
        assert c.welcome["exp"] == tok_claims["exp"], c.welcome
        await c.close()
        c = await connect_token(hs_server, hs(sub="bob", ttl=None))
        assert c.welcome["user"] == "bob" and "exp" in c.welcome and c.welcome["exp"] is None, c.welcome
        await c.close()
    run(go())


def test_token_in_authorization_bearer_header(hs_server):
    async def go():
        jc = await connect_json(hs_server, "/ws", extra_headers={"Authorization": f"Bearer {hs(sub='carol')}"})
        assert jc.welcome["user"] == "carol", jc.welcome
        await jc.ws.close()
    run(go())


def test_missing_token_is_401_and_user_param_is_400(hs_server):
    resp = assert_refused(hs_server, None, 401, ["token missing"], path="/ws")
    assert "bearer" in (resp.header("www-authenticate") or "").lower(), resp.head
    assert_refused(hs_server, None, 400, ["?user="], path="/ws?user=alice")
    assert_refused(hs_server, None, 400, ["?user="], path=f"/ws?user=alice&token={hs()}")
    # another scheme than Bearer is no token
    assert_refused(hs_server, None, 401, ["token missing"], path="/ws", headers=[("Authorization", "Basic YTpi")])


BAD_HS_TOKENS = {
    "garbage": ("not-a-token", ["malformed"]),
    "two parts": ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0", ["malformed"]),
    "header not json": (f"{b64(b'nope')}.{b64(b'{}')}.{b64(b'x')}", ["malformed"]),
    "payload not an object": (hs_forged([1, 2], SECRET.encode()), ["malformed"]),
    "bad signature": (None, ["bad signature"]),
    "alg none": (raw_token({"alg": "none", "typ": "JWT"}, {"sub": "alice"}), ["wrong algorithm"]),
    "alg None spelled otherwise": (raw_token({"alg": "NONE"}, {"sub": "alice"}), ["wrong algorithm"]),
    "alg hs256 in lower case": (None, ["wrong algorithm"]),
    "expired": (None, ["expired"]),
    "not yet valid": (None, ["not yet valid"]),
    "missing sub": (None, ["sub"]),
    "sub not an id": (None, ["sub"]),
    "sub not a string": (None, ["sub"]),
    "rooms not an array": (None, ["rooms"]),
    "rooms with a bad pattern": (None, ["rooms"]),
    "publish not an array": (None, ["publish"]),
    "send not a boolean": (None, ["send"]),
    "broadcast not a boolean": (None, ["broadcast"]),
    "tenant too long": (None, ["tenant"]),
    "tenant with a space": (None, ["tenant"]),
    "info not an object": (None, ["info"]),
    "info over 1 KiB": (None, ["info"]),
    "exp not a number": (None, ["exp"]),
    "nbf not a number": (None, ["nbf"]),
    "aud not a string": (None, ["aud"]),
}


def bad_hs_token(kind):
    tok, words = BAD_HS_TOKENS[kind]
    if tok is not None:
        return tok, words
    now = int(time.time())
    made = {
        "bad signature": lambda: hs(secret="another-secret-0123456789abcdef"),
        "alg hs256 in lower case": lambda: hs_forged(claims(), SECRET.encode()).replace(
            b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            b64(json.dumps({"alg": "hs256", "typ": "JWT"}).encode()), 1),
        "expired": lambda: hs(exp=now - 60),
        "not yet valid": lambda: hs(nbf=now + 60),
        "missing sub": lambda: hs(sub=None),
        "sub not an id": lambda: hs(sub="alice smith"),
        "sub not a string": lambda: hs(sub=42),
        "rooms not an array": lambda: hs(rooms="general"),
        "rooms with a bad pattern": lambda: hs(rooms=["a*b"]),
        "publish not an array": lambda: hs(publish=1),
        "send not a boolean": lambda: hs(send="yes"),
        "broadcast not a boolean": lambda: hs(broadcast=1),
        "tenant too long": lambda: hs(tenant="t" * 65),
        "tenant with a space": lambda: hs(tenant="a b"),
        "info not an object": lambda: hs(info=["x"]),
        "info over 1 KiB": lambda: hs(info={"bio": "x" * 1100}),
        "exp not a number": lambda: hs(exp="tomorrow"),
        "nbf not a number": lambda: hs(nbf=True),
        "aud not a string": lambda: hs(aud=7),
    }
    return made[kind](), words


@pytest.mark.parametrize("kind", sorted(BAD_HS_TOKENS))
def test_bad_token_gets_401_with_its_reason(hs_server, kind):
    tok, words = bad_hs_token(kind)
    assert_refused(hs_server, tok, 401, words)
    # the same through the header
    assert_refused(hs_server, None, 401, words, path="/ws", headers=[("Authorization", f"Bearer {tok}")])


def test_leeway_lets_a_just_expired_or_early_token_in(hs_server):
    async def go():
        now = int(time.time())
        for tok in (hs(exp=now - 2), hs(nbf=now + 2)):
            c = await connect_token(hs_server, tok)
            assert c.welcome["user"] == "alice"
            await c.close()
    run(go())


def test_rs256_server_refuses_algorithm_confusion(rs_server, keys):
    async def go():
        c = await connect_token(rs_server, signed(keys["rsa"], "RS256", sub="dave"))
        assert c.welcome["user"] == "dave"
        await c.close()
    run(go())
    # an HS256 token keyed with the server's own public key
    assert_refused(rs_server, hs_forged(claims(), keys["rsa"]["public"]), 401, ["wrong algorithm"])
    assert_refused(rs_server, hs(), 401, ["wrong algorithm"])
    assert_refused(rs_server, signed(keys["ec"], "ES256"), 401, ["wrong algorithm"])
    assert_refused(rs_server, signed(keys["rsa"], "RS512"), 401, ["wrong algorithm"])
    assert_refused(rs_server, signed(keys["rsa_other"], "RS256"), 401, ["bad signature"])
    assert_refused(rs_server, raw_token({"alg": "none"}, claims()), 401, ["wrong algorithm"])


def test_es256_server_takes_es256_only(es_server, keys):
    async def go():
        c = await connect_token(es_server, signed(keys["ec"], "ES256", sub="erin"))
        assert c.welcome["user"] == "erin"
        await c.close()
    run(go())
    assert_refused(es_server, signed(keys["rsa"], "RS256"), 401, ["wrong algorithm"])
    assert_refused(es_server, hs_forged(claims(), keys["ec"]["public"]), 401, ["wrong algorithm"])
    other = ec.generate_private_key(ec.SECP256R1())
    assert_refused(es_server, jwt.encode(claims(), _pem_private(other), algorithm="ES256"), 401, ["bad signature"])


def test_audience_and_issuer_are_checked_when_set(aud_server):
    async def go():
        for aud in ("chat.example.com", ["other", "chat.example.com"]):
            c = await connect_token(aud_server, hs(aud=aud, iss="auth.example.com"))
            assert c.welcome["user"] == "alice"
            await c.close()
    run(go())
    assert_refused(aud_server, hs(aud="other", iss="auth.example.com"), 401, ["wrong audience"])
    assert_refused(aud_server, hs(iss="auth.example.com"), 401, ["wrong audience"])
    assert_refused(aud_server, hs(aud="chat.example.com", iss="evil.example.com"), 401, ["wrong issuer"])
    assert_refused(aud_server, hs(aud="chat.example.com"), 401, ["wrong issuer"])


# ---- rights ------------------------------------------------------------------------

def test_rooms_claim_allows_and_refuses_joins(hs_server):
    async def go():
        c = await connect_token(hs_server, hs(sub="ann", rooms=["general", "team-42:*"]))
        await c.join("general")
        await c.join("team-42:ops")
        await c.join("team-42:")
        for room in ("generally", "team-43:ops", "team-42"):
            r = await c.error({"type": "join", "room": room}, "forbidden")
            assert "rooms" in r["message"], r
        star = await connect_token(hs_server, hs(sub="root", rooms=["*"]))
        await star.join("anything.at:all")
        none = await connect_token(hs_server, hs(sub="nobody"))
        await none.error({"type": "join", "room": "general"}, "forbidden")
        for x in (c, star, none):
            await x.close()
    run(go())


def test_publish_needs_the_claim_and_the_join(hs_server):
    async def go():
        room, other = uniq("pub"), uniq("ro")
        c = await connect_token(hs_server, hs(sub="pam", rooms=[room, other], publish=[room]))
        await c.error({"type": "publish", "room": room, "data": 1}, "not_member")
        await c.join(room)
        await c.join(other)
        await c.publish(room, {"text": "hi"})
        await c.error({"type": "publish", "room": other, "data": 1}, "forbidden")
        # a publish claim without rooms: it may not join, so it cannot publish
        p = await connect_token(hs_server, hs(sub="pete", publish=["*"]))
        await p.error({"type": "join", "room": room}, "forbidden")
        await p.error({"type": "publish", "room": room, "data": 1}, "not_member")
        for x in (c, p):
            await x.close()
    run(go())


def test_send_and_broadcast_follow_their_claims(hs_server):
    async def go():
        plain = await connect_token(hs_server, hs(sub="sam"))
        await plain.error({"type": "send", "user": "sam", "data": 1}, "forbidden")
        await plain.error({"type": "broadcast", "data": 1}, "forbidden")
        # the server has no --allow-broadcast: in mode jwt the claim decides
        both = await connect_token(hs_server, hs(sub="sue", send=True, broadcast=True))
        await both.ok({"type": "send", "user": "sam", "data": "psst"}, "ack")
        direct = await plain.recv_until("direct")
        assert direct["from"] == "sue" and direct["data"] == "psst", direct
        await both.ok({"type": "broadcast", "data": "all"}, "ack")
        await plain.recv_until("broadcast", data="all")
        no = await connect_token(hs_server, hs(sub="sid", send=False, broadcast=False))
        await no.error({"type": "send", "user": "sam", "data": 1}, "forbidden")
        for x in (plain, both, no):
            await x.close()
    run(go())


def test_history_and_presence_of_a_room_not_allowed_leak_nothing(hs_server):
    async def go():
        secret, open_room = uniq("secret"), uniq("open")
        owner = await connect_token(hs_server, hs(sub="olga", rooms=[secret, open_room], publish=["*"]))
        await owner.join(secret)
        await owner.publish(secret, {"text": "classified"})
        await owner.join(open_room)
        await owner.publish(open_room, {"text": "public"})
        spy = await connect_token(hs_server, hs(sub="spy", rooms=[open_room]))
        for cmd in ({"type": "history", "room": secret}, {"type": "presence", "room": secret}):
            r = await spy.error(cmd, "forbidden")
            assert "classified" not in json.dumps(r) and "olga" not in json.dumps(r), r
        # the token's rooms grant reading without a join
        h = await spy.history(open_room)
        assert [m["data"] for m in h["messages"]] == [{"text": "public"}], h
        p = await spy.presence(open_room)
        assert [u["user"] for u in p["users"]] == ["olga"], p
        await owner.publish(secret, {"text": "more"})
        await spy.drain(0.2)
        assert not any("classified" in json.dumps(m) or "more" in json.dumps(m) for m in spy.log), spy.log
        for x in (owner, spy):
            await x.close()
    run(go())


def test_anonymous_connections_join_and_read_only_anonymous_rooms(anon_server):
    async def go():
        a = await connect(anon_server, label="anon")
        assert a.welcome["user"] is None and "exp" not in a.welcome, a.welcome
        await a.error({"type": "history", "room": "lobby"}, "not_member")
        await a.join("lobby")
        await a.join("public:news")
        await a.history("lobby")
        await a.presence("public:news")
        for cmd in ({"type": "join", "room": "private"}, {"type": "history", "room": "private"},
                    {"type": "presence", "room": "private"},
                    {"type": "publish", "room": "lobby", "data": 1}, {"type": "send", "user": "x", "data": 1},
                    {"type": "broadcast", "data": 1}):
            await a.error(cmd, "forbidden")
        # a token still works on the same server
        t = await connect_token(anon_server, hs(sub="tina", rooms=["private"], publish=["private"]))
        await t.join("private")
        await t.publish("private", 1)
        for x in (a, t):
            await x.close()
    run(go())


def test_anonymous_without_allow_anonymous_is_401(hs_server):
    assert_refused(hs_server, None, 401, ["token missing"], path="/ws")


# ---- expiry and refresh ---------------------------------------------------------

def test_expiry_closes_with_1008_within_leeway_plus_one_second(quick_server):
    async def go():
        exp = int(time.time()) + 2
        jc = await connect_json(quick_server, f"/ws?token={hs(exp=exp)}")
        assert jc.welcome["exp"] == exp
        try:
            await asyncio.wait_for(jc.ws.recv(), 10 * SLOW)
            raise AssertionError("the connection should have been closed, got a message")
        except Exception as e:
            assert jc.ws.close_code == 1008, f"expected close 1008, got {jc.ws.close_code} ({e!r})"
        assert jc.ws.close_reason == "token expired", jc.ws.close_reason
        late = time.time() - exp
        assert late < 0 + 1 + 0.5 * SLOW, f"closed {late:.2f}s after exp with a leeway of 0"
    run(go())


def test_refresh_replaces_rights_and_leaves_rooms_no_longer_allowed(quick_server):
    async def go():
        keep, drop = uniq("keep"), uniq("drop")
        old_exp = int(time.time()) + 2
        c = await connect_token(quick_server, hs(sub="rita", rooms=[keep, drop], exp=old_exp))
        watcher = await connect_token(quick_server, hs(sub="walt", rooms=["*"]))
        await watcher.join(drop)
        await c.join(keep)
        await c.join(drop)
        await c.error({"type": "publish", "room": keep, "data": 1}, "forbidden")
        new_exp = int(time.time()) + 3600
        r = await c.ok({"type": "refresh", "token": hs(sub="rita", rooms=[keep], publish=[keep], exp=new_exp)},
                       "refreshed")
        assert r["exp"] == new_exp, r
        left = [m for m in c.log if m.get("type") == "left" and m.get("room") == drop]
        assert left and left[0].get("reason") == "forbidden" and "ref" not in left[0], c.log
        assert c.log.index(left[0]) < c.log.index(r), "the rooms are left before the reply"
        await watcher.recv_until("presence_leave", room=drop, user="rita")
        await c.publish(keep, "now allowed")
        await c.error({"type": "join", "room": drop}, "forbidden")
        # the old exp passes: the new one counts
        await asyncio.sleep(max(0.0, old_exp + 1.5 - time.time()))
        await c.ok({"type": "ping"}, "pong")
        for x in (c, watcher):
            await x.close()
    run(go())


def test_refresh_refusals_keep_the_old_token(hs_server):
    async def go():
        room = uniq("r")
        c = await connect_token(hs_server, hs(sub="ross", rooms=[room], tenant="acme"))
        await c.join(room)
        r = await c.error({"type": "refresh", "token": hs(sub="other", rooms=[room], tenant="acme")}, "forbidden")
        assert "sub" in r["message"], r
        await c.error({"type": "refresh", "token": hs(sub="ross", rooms=[room], tenant="other")}, "forbidden")
        await c.error({"type": "refresh", "token": hs(sub="ross", rooms=[room])}, "forbidden")
        r = await c.error({"type": "refresh", "token": hs(sub="ross", exp=int(time.time()) - 60)}, "token_invalid")
        assert "expired" in r["message"], r
        await c.error({"type": "refresh", "token": "garbage"}, "token_invalid")
        await c.error({"type": "refresh", "token": hs(secret="wrong-secret-0123456789abcdef")}, "token_invalid")
        await c.error({"type": "refresh"}, "bad_command")
        # still in the room, with the old rights
        await c.history(room)
        assert not [m for m in c.log if m.get("type") == "left"], c.log
        await c.close()
    run(go())


def test_refresh_of_an_anonymous_or_mode_none_connection_is_forbidden(anon_server, wsfan):
    async def go():
        a = await connect(anon_server, label="anon-refresh")
        await a.error({"type": "refresh", "token": hs(sub="alice")}, "forbidden")
        await a.close()
        srv = wsfan()
        n = await connect(srv, "nora")
        assert "exp" not in n.welcome, n.welcome
        await n.error({"type": "refresh", "token": hs(sub="nora")}, "forbidden")
        await n.close()
    run(go())


# ---- configuration and wsfan token ------------------------------------------------

@pytest.mark.parametrize("args,words", [
    (["--auth", "jwt"], ["--auth jwt", "exactly one key"]),
    (["--auth", "jwt", "--jwt-secret", "s", "--jwt-public-key", "/dev/null"], ["not both"]),
    (["--jwt-secret", "abc"], ["--jwt-secret", "--auth jwt"]),
    (["--auth", "jwt", "--jwt-public-key", "/nonexistent/key.pem"], ["--jwt-public-key", "cannot read"]),
    (["--auth", "jwt", "--jwt-public-key", "/etc/hostname"], ["--jwt-public-key", "pem public key"]),
    (["--auth", "jwt", "--jwt-secret", "s", "--anonymous-rooms", "a b"], ["--anonymous-rooms"]),
])
def test_bad_auth_configuration_stops_the_server(args, words):
    res = run_wsfan(*args)
    assert res.returncode == 2, (args, res.returncode, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line, res.stderr
    for w in words:
        assert w.lower() in line.lower(), (w, line)


@pytest.mark.parametrize("name,words", [
    ("priv_path", ["pem public key", "-pubout"]),
    ("ec384", ["p-256"]),
    ("rsa1024", ["2048"]),
])
def test_key_files_the_server_refuses(keys, name, words):
    path = keys[name]["pub_path"] if name != "priv_path" else keys["rsa"]["priv_path"]
    res = run_wsfan("--auth", "jwt", "--jwt-public-key", path)
    assert res.returncode == 2, res
    for w in words:
        assert w.lower() in res.stderr.lower(), res.stderr


def test_wsfan_token_prints_a_token_that_verifies(hs_server):
    res = run_wsfan("token", "--sub", "alice", "--rooms", "general,team-42:*", "--publish", "general", "--ttl",
                    "3600", "--send", "--broadcast", "--tenant", "acme", "--info", '{"name":"Alice"}',
                    "--aud", "chat", "--iss", "me", env={"WSFAN_JWT_SECRET": SECRET})
    assert res.returncode == 0, res.stderr
    tok = res.stdout.strip()
    got = jwt.decode(tok, SECRET, algorithms=["HS256"], audience="chat", issuer="me")
    assert got["sub"] == "alice" and got["rooms"] == ["general", "team-42:*"] and got["publish"] == ["general"]
    assert got["send"] is True and got["broadcast"] is True and got["tenant"] == "acme"
    assert got["info"] == {"name": "Alice"} and 3590 <= got["exp"] - time.time() <= 3600, got

    async def go():
        c = await connect_token(hs_server, run_wsfan("token", "--sub", "tom", "--rooms", "general",
                                                     "--jwt-secret", SECRET).stdout.strip())
        assert c.welcome["user"] == "tom"
        await c.join("general")
        await c.close()
    run(go())


def test_wsfan_token_refuses_what_the_server_would(hs_server):
    for args, words in ((["--sub", "bad id"], ["sub"]), (["--sub", "a", "--rooms", "a*b"], ["rooms"]),
                        (["--sub", "a", "--info", "[1]"], ["--info"]), (["--rooms", "x"], ["--sub"])):
        res = run_wsfan("token", *args, env={"WSFAN_JWT_SECRET": SECRET})
        assert res.returncode == 2 and res.stdout == "", (args, res)
        for w in words:
            assert w in res.stderr, (args, res.stderr)
    res = run_wsfan("token", "--sub", "a")
    assert res.returncode == 2 and "WSFAN_JWT_SECRET" in res.stderr, res.stderr
