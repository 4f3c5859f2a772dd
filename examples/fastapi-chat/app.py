"""fastapi-chat: a FastAPI backend that leaves the WebSockets to wsfan.

The backend logs demo users in, mints their wsfan tokens (HS256, the claims
of docs/protocol.md section 1a) and notifies users through wsfan's HTTP API
(POST /api/publish with "users", section 7). It keeps no per-connection
state, so it runs with any number of uvicorn workers.

Settings come from the environment (run.sh sets them):
  WSFAN_JWT_SECRET    the HS256 secret shared with wsfan (--auth jwt)
  WSFAN_API_KEY       wsfan's --api-key
  APP_SESSION_SECRET  signs this app's own session cookies
  APP_WSFAN_API_URL   wsfan's HTTP API (default http://127.0.0.1:8080)
  APP_WSFAN_WS_URL    wsfan's /ws as the browser reaches it (default ws://127.0.0.1:8080/ws)
  APP_TOKEN_TTL       seconds a wsfan token lives (default 900)
  APP_DEMO_PASSWORD   every demo user's password (DEMO ONLY, default "demo")
"""

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field

HERE = Path(__file__).resolve().parent


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"fastapi-chat: set {name} (see examples/fastapi-chat/README.md)")
    return value


JWT_SECRET = required("WSFAN_JWT_SECRET")
API_KEY = required("WSFAN_API_KEY")
SESSION_SECRET = required("APP_SESSION_SECRET")
WSFAN_API_URL = os.environ.get("APP_WSFAN_API_URL", "http://127.0.0.1:8080")
WSFAN_WS_URL = os.environ.get("APP_WSFAN_WS_URL", "ws://127.0.0.1:8080/ws")
TOKEN_TTL = int(os.environ.get("APP_TOKEN_TTL", "900"))
DEMO_PASSWORD = os.environ.get("APP_DEMO_PASSWORD", "demo")  # DEMO ONLY: no real passwords here
WSFAN_JS = HERE.parents[1] / "clients" / "js" / "wsfan.js"
ISSUER = "fastapi-chat"  # wsfan runs with --jwt-issuer fastapi-chat
SESSION_COOKIE = "session"
SESSION_TTL = 8 * 3600

# The demo users: id -> display name. A real app asks its user store.
USERS = {"alice": "Alice", "bob": "Bob", "carol": "Carol"}
ROOM = "lobby"

app = FastAPI(title="fastapi-chat")


class Login(BaseModel):
    user: str
    password: str


class Notify(BaseModel):
    to: List[str] = Field(..., min_items=1, max_items=len(USERS))
    text: str = Field(..., min_length=1, max_length=500)


def current_user(request: Request) -> str:
    """The user of the session cookie, or 401."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    try:
        claims = jwt.decode(cookie, SESSION_SECRET, algorithms=["HS256"], audience=ISSUER)
    except jwt.InvalidTokenError:
        raise HTTPException(401, "log in first")
    if claims.get("sub") not in USERS:
        raise HTTPException(401, "log in first")
    return claims["sub"]


def wsfan_token(user: str) -> dict:
    """A wsfan token (docs/protocol.md 1a): who the user is, what it may join and publish to."""
    exp = int(time.time()) + TOKEN_TTL
    claims = {
        "sub": user,
        "exp": exp,
        "iss": ISSUER,
        "rooms": [ROOM],
        "publish": [ROOM],
        "info": {"name": USERS[user]},  # shown to others in presence
    }
    return {"token": jwt.encode(claims, JWT_SECRET, algorithm="HS256"), "exp": exp, "url": WSFAN_WS_URL}


def wsfan_publish(body: dict) -> dict:
    """POST /api/publish on wsfan with the API key; a failure becomes 502."""
    request = urllib.request.Request(
        f"{WSFAN_API_URL}/api/publish",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as err:
        raise HTTPException(502, f"wsfan answered {err.code}: {err.read().decode(errors='replace')}")
    except OSError as err:
        raise HTTPException(502, f"wsfan unreachable: {err}")


@app.get("/", include_in_schema=False)
def page():
    return FileResponse(HERE / "static" / "index.html")


@app.get("/wsfan.js", include_in_schema=False)
def client_js():
    return FileResponse(WSFAN_JS, media_type="text/javascript")


@app.get("/healthz", response_class=PlainTextResponse)
def healthz():
    return "ok"


@app.post("/login")
def login(body: Login, response: Response):
    if body.user not in USERS or body.password != DEMO_PASSWORD:
        raise HTTPException(401, "unknown user or wrong password")
    session = jwt.encode(
        {"sub": body.user, "aud": ISSUER, "exp": int(time.time()) + SESSION_TTL},
        SESSION_SECRET,
        algorithm="HS256",
    )
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_TTL, httponly=True, samesite="strict")
    return {"user": body.user, "name": USERS[body.user]}


@app.post("/logout")
def logout(response: Response):
    response.delete_cookie(SESSION_COOKIE)
    return {}


@app.get("/me")
def me(user: str = Depends(current_user)):
    return {"user": user, "name": USERS[user], "users": USERS}


@app.get("/wsfan-token")
def token(user: str = Depends(current_user)):
    """A fresh token; the page asks again before the old one expires."""
    return wsfan_token(user)


@app.post("/notify")
def notify(body: Notify, user: str = Depends(current_user)):
    """One direct event on every connection of each named user, in one call to wsfan."""
    unknown = [u for u in body.to if u not in USERS]
    if unknown:
        raise HTTPException(400, f"no such user: {', '.join(unknown)}")
    data = {"kind": "notification", "by": user, "text": body.text}
    wsfan_publish({"users": body.to, "data": data})
    return {"notified": sorted(set(body.to))}
