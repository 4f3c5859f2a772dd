"""The configuration file (docs/operations.md "Configuration file"):
--check-config, a server started with --config, --print-config against the
committed packaging/wsfan.conf, and SIGHUP reloading log-level and
rate-limit live, or keeping the running settings when the file is invalid."""

import signal
import time

from conftest import OP_TEXT, REPO, SLOW, RawClient, cmd, frame, http_get, run_wsfan


def write(path, text):
    path.write_text(text)
    return str(path)


# ---- --check-config and --print-config ------------------------------------------------------

def test_check_config_accepts_a_valid_file(tmp_path):
    inc = tmp_path / "conf.d"
    inc.mkdir()
    write(inc / "limits.conf", "max-data 16k\n")
    conf = write(tmp_path / "wsfan.conf", '# comment\n\nrate-limit 50\nallowed-origins "https://a.example.com, '
                                          'https://b.example.com"\ninclude conf.d/limits.conf\n')
    p = run_wsfan("--config", conf, "--check-config")
    assert (p.returncode, p.stdout, p.stderr) == (0, "configuration OK\n", ""), p


def test_check_config_names_file_and_line_of_a_bad_value(tmp_path):
    conf = write(tmp_path / "wsfan.conf", "rate-limit 50\nmax-message 12q\n")
    p = run_wsfan("--check-config", env={"WSFAN_CONFIG": conf})
    assert p.returncode == 2, p
    assert p.stderr == (f"wsfan: {conf}:2: max-message=12q: expected a size from 128 to 1073741824 bytes, "
                        "such as 64k or 1m\n"), p.stderr
    assert p.stdout == ""


def test_check_config_refuses_an_unknown_option(tmp_path):
    conf = write(tmp_path / "wsfan.conf", "\n# x\nlisten-port 80\n")
    p = run_wsfan("--config", conf, "--check-config")
    assert p.returncode == 2, p
    assert p.stderr == f"wsfan: {conf}:3: listen-port: unknown option (see --help)\n", p.stderr


def test_flags_and_variables_win_over_the_file(tmp_path):
    conf = write(tmp_path / "wsfan.conf", "rate-limit 50\nmax-rooms 7\nheartbeat 9\n")
    p = run_wsfan("--config", conf, "--heartbeat", "11", "--print-config", env={"WSFAN_MAX_ROOMS": "8"})
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert {"rate-limit 50", "max-rooms 8", "heartbeat 11"} <= set(lines), p.stdout


def test_print_config_reads_back_the_same(tmp_path):
    conf = write(tmp_path / "wsfan.conf", 'allowed-origins "https://a.example.com, https://*.b.example.com"\n'
                                          "trusted-proxies 10.0.0.0/8,::1\nmax-data 16k\nallow-broadcast true\n")
    first = run_wsfan("--config", conf, "--print-config")
    assert first.returncode == 0, first
    again = run_wsfan("--config", write(tmp_path / "printed.conf", first.stdout), "--print-config")
    assert again.returncode == 0, again
    assert again.stdout == first.stdout


def test_packaging_example_is_what_print_config_writes():
    """packaging/wsfan.conf is generated: `build/wsfan --print-config > packaging/wsfan.conf`
    with no WSFAN_* variable set. Regenerate it when an option changes."""
    p = run_wsfan("--print-config")
    assert p.returncode == 0, p
    committed = (REPO / "packaging" / "wsfan.conf").read_text()
    assert p.stdout == committed, "packaging/wsfan.conf is out of date: regenerate it with build/wsfan --print-config"


# ---- a server started with --config, and SIGHUP ---------------------------------------------

def burst(srv, n):
    """Sends n pings at once on a new connection; returns how many were rate_limited."""
    with RawClient.open(srv) as c:
        c.send(b"".join(frame(OP_TEXT, cmd({"type": "ping", "ref": i})) for i in range(n)))
        replies = [c.recv_json() for _ in range(n)]
    return sum(1 for r in replies if r.get("code") == "rate_limited")


def wait_for_log(srv, text, timeout=5.0):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if text in srv.log():
            return
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} in the log:\n{srv.log_tail()}")


def refused_origin(srv):
    """A handshake from a page of another origin: refused with 403 (logged at debug)."""
    c = RawClient(srv.port)
    try:
        return c.upgrade("/ws", headers=[("Origin", "https://evil.example.com")]).status
    finally:
        c.close()


def test_server_runs_with_the_file_and_sighup_applies_rate_limit_and_log_level(wsfan, tmp_path):
    conf = tmp_path / "wsfan.conf"
    write(conf, "rate-limit 5\nlog-level info\n")
    srv = wsfan("--config", str(conf))
    assert burst(srv, 12) == 7
    assert refused_origin(srv) == 403
    assert "is not allowed, refused with 403" not in srv.log()

    write(conf, "rate-limit 100\nlog-level debug\nheartbeat 9\n")
    srv.signal(signal.SIGHUP)
    wait_for_log(srv, "config: rate-limit 5 -> 100")
    log = srv.log()
    assert "config: log-level info -> debug" in log, log
    assert "config: heartbeat changed; takes effect after a restart" in log, log
    # The workers take the new settings from their inbox: soon, not at once.
    deadline = time.monotonic() + 5 * SLOW
    while burst(srv, 12) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert burst(srv, 12) == 0
    assert refused_origin(srv) == 403
    wait_for_log(srv, "is not allowed, refused with 403")


def test_sighup_with_an_invalid_file_keeps_the_running_settings(wsfan, tmp_path):
    conf = tmp_path / "wsfan.conf"
    write(conf, "rate-limit 5\n")
    srv = wsfan("--config", str(conf))
    write(conf, "rate-limit 100\nmax-data lots\n")
    srv.signal(signal.SIGHUP)
    wait_for_log(srv, f"SIGHUP: {conf}:2: max-data=lots: expected a size")
    assert "keeping the running configuration" in srv.log()
    assert srv.alive()
    assert burst(srv, 12) == 7
    assert http_get(srv.port, "/healthz").status == 200


def test_sighup_flags_win_over_the_reloaded_file(wsfan, tmp_path):
    conf = tmp_path / "wsfan.conf"
    write(conf, "rate-limit 50\n")
    srv = wsfan("--config", str(conf), "--rate-limit", "5")
    write(conf, "rate-limit 100\n")
    srv.signal(signal.SIGHUP)
    wait_for_log(srv, "SIGHUP: nothing to change")
    assert burst(srv, 12) == 7
