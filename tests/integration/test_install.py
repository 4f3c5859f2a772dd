"""make install / uninstall and wsfan(1) (docs/operations.md, "Installing as
a service"): the manual page that scripts/gen-man makes from --help lists
every option with its words and variable, groff formats it without a
warning, install puts each file where packagers expect it with its mode, and
uninstall takes back all of it but a configuration the user changed. The
unit passes systemd-analyze verify where systemd is installed."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, wsfan_bin

HELP_OPTION = re.compile(r"^  (--[a-z0-9-]+) +(.*)$")
EXPECTED = {  # path under DESTDIR with PREFIX=/usr -> mode
    "usr/bin/wsfan": 0o755,
    "usr/share/man/man1/wsfan.1": 0o644,
    "usr/lib/systemd/system/wsfan.service": 0o644,
}
CONF = "etc/wsfan/wsfan.conf"


def gen_man(tmp_path):
    page = tmp_path / "wsfan.1"
    with page.open("w") as out:
        subprocess.run(["/usr/bin/python3", str(REPO / "scripts" / "gen-man"), wsfan_bin()],
                       stdout=out, check=True, timeout=30)
    return page


def make(*args):
    """make -s in the repository, without the jobserver of a make above."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], env=env, check=True,
                          capture_output=True, text=True, timeout=600)


def files_under(root):
    """{relative path: mode} of every file (not directory) under root."""
    return {str(p.relative_to(root)): p.stat().st_mode & 0o7777 for p in root.rglob("*") if not p.is_dir()}


def test_man_page_has_every_option_of_help(tmp_path):
    help_text = subprocess.run([wsfan_bin(), "--help"], capture_output=True, text=True, check=True).stdout
    options = [HELP_OPTION.match(line).groups() for line in help_text.splitlines() if line.startswith("  --")]
    assert len(options) > 40, help_text
    # One line per paragraph, no hyphenation, no bold: the words as printed.
    shown = subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", "-rLL=10000n", "-rHY=0", str(gen_man(tmp_path))],
                           capture_output=True, text=True, check=True).stdout
    shown = " ".join(shown.split())
    for name, rest in options:
        entry = name + " " + re.sub(r" \[(WSFAN_[A-Z0-9_]+)\]$", r" Environment: \1", rest)
        assert " ".join(entry.split()) in shown, f"wsfan(1) has no entry {entry!r} as in --help"


def test_man_page_formats_without_warnings(tmp_path):
    run = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(gen_man(tmp_path))],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_install_then_uninstall_leaves_nothing(tmp_path):
    make("install", f"DESTDIR={tmp_path}", "PREFIX=/usr")
    expected = dict(EXPECTED)
    if (REPO / "packaging" / "wsfan.conf").exists():
        expected[CONF] = 0o644
    assert files_under(tmp_path) == expected
    assert (tmp_path / "usr/bin/wsfan").read_bytes() == (REPO / "build/wsfan").read_bytes()
    unit = (tmp_path / "usr/lib/systemd/system/wsfan.service").read_text()
    assert "\nExecStart=/usr/bin/wsfan --config /etc/wsfan/wsfan.conf\n" in unit
    make("uninstall", f"DESTDIR={tmp_path}", "PREFIX=/usr")
    assert files_under(tmp_path) == {}


def test_install_keeps_a_configuration_and_uninstall_a_changed_one(tmp_path):
    example = tmp_path / "example.conf"
    example.write_text("listen = 127.0.0.1:8080\n")
    root = tmp_path / "root"
    args = (f"DESTDIR={root}", "PREFIX=/usr", f"CONF_SRC={example}")
    make("install", *args)
    assert files_under(root) == {**EXPECTED, CONF: 0o644}
    conf = root / CONF
    conf.write_text("listen = 0.0.0.0:8080\n")
    assert "kept the existing" in make("install", *args).stdout
    assert conf.read_text() == "listen = 0.0.0.0:8080\n"
    assert "left" in make("uninstall", *args).stdout
    assert files_under(root) == {CONF: 0o644}


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze (Debian's systemd) not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # Installed under a PREFIX of its own (no DESTDIR), so that the unit's
    # ExecStart names a binary that is there; CONF_SRC names no file, so
    # nothing goes to /etc.
    args = (f"PREFIX={tmp_path}", f"CONF_SRC={tmp_path}/none")
    make("install", *args)
    run = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "lib/systemd/system/wsfan.service")],
                         env={**os.environ, "MANPATH": str(tmp_path / "share/man")},
                         capture_output=True, text=True, timeout=60)
    make("uninstall", *args)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert files_under(tmp_path) == {}
