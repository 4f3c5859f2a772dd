#!/usr/bin/python3
"""idle_memory.py - what one idle joined connection costs, in wsfan's own
memory and in the kernel, measured from a fresh server:

    bench/idle_memory.py [--bin build/wsfan] [--connections N] [--rooms R] [--tls] [--anonymous]

Starts one wsfan (memory engines, --workers 1) on a free loopback port,
opens N WebSocket connections (default 5,000; this process and the server
each need N descriptors, 20,000 at most here), each joined to one of R
rooms (default 100), and reads, before and after:
- the server's VmRSS (user-space memory, its allocator included);
- the kernel's slab memory (/proc/meminfo Slab: sockets, inodes, dentries,
  epoll items) and the TCP buffer pages of /proc/net/sockstat.
Both ends of each connection are on this machine, so the kernel figures
cover 2N sockets; the report divides them by 2N for one socket. Other work
on the machine moves the slab figure: run it on a quiet machine and repeat.
--anonymous: connections without a user (`/ws`), instead of one user per
connection (`/ws?user=uN`), which adds the user's index entries.
--tls: the server with --tls-cert (a self-signed P-256 certificate made
with the openssl CLI), the clients over wss://."""

import argparse
import asyncio
import os
import socket
import ssl
import subprocess
import tempfile
import time

import websockets

from scale import free_port, kernel_sample, rss_bytes


def kernel():
    k = kernel_sample()
    return k["slab"], k["tcp_mem_bytes"]


def self_signed(folder):
    """--tls-cert and --tls-key flags for a certificate made in folder."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"], check=True,
                   capture_output=True)
    return ["--tls-cert", cert, "--tls-key", key]


def unverified_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback, our own certificate
    return ctx


async def open_all(port, n, rooms, tls, anonymous):
    conns = []
    url, extra = (f"wss://127.0.0.1:{port}", {"ssl": unverified_context()}) if tls else (f"ws://127.0.0.1:{port}", {})
    for i in range(n):
        path = "/ws" if anonymous else f"/ws?user=u{i}"
        ws = await websockets.connect(f"{url}{path}", max_size=None, ping_interval=None, **extra)
        await ws.recv()  # welcome
        await ws.send(f'{{"type":"join","room":"r{i % rooms}"}}')
        while '"joined"' not in await ws.recv():
            pass
        conns.append(ws)
    await asyncio.sleep(1.0)  # presence events settle
    return conns


async def measure(port, n, rooms, pid, tls, anonymous):
    """Opens the connections and reads the figures while they are open."""
    conns = await open_all(port, n, rooms, tls, anonymous)
    figures = rss_bytes(pid), kernel()
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    return figures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "wsfan"))
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--tls", action="store_true", help="serve and connect over TLS")
    ap.add_argument("--anonymous", action="store_true", help="connections without a user")
    args = ap.parse_args()
    port = free_port()
    folder = tempfile.TemporaryDirectory()
    tls_flags = self_signed(folder.name) if args.tls else []
    server = subprocess.Popen([args.bin, "--listen", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "error",
                               "--max-connections-per-ip", "0", "--rate-limit", "0", *tls_flags])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)
        rss0, (slab0, tcp0) = rss_bytes(server.pid), kernel()
        (rss1, (slab1, tcp1)) = asyncio.run(measure(port, args.connections, args.rooms, server.pid, args.tls, args.anonymous))
        n = args.connections
        who = "anonymous" if args.anonymous else "one user each"
        print(f"{n} idle connections ({who}){' over TLS' if args.tls else ''} in {args.rooms} rooms, from a fresh server")
        print("| memory | per connection |")
        print("| --- | --- |")
        print(f"| wsfan VmRSS | {(rss1 - rss0) / n:.0f} bytes |")
        print(f"| kernel slab, per socket (2N sockets) | {(slab1 - slab0) / (2 * n):.0f} bytes |")
        print(f"| kernel TCP buffers, per socket | {(tcp1 - tcp0) / (2 * n):.0f} bytes |")
    finally:
        server.terminate()
        server.wait(10)
        folder.cleanup()


if __name__ == "__main__":
    main()
