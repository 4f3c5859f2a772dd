#!/usr/bin/python3
"""report.py - turns the JSON lines of one `make bench` run into
docs/benchmarks.md and docs/bench-fanout.png (gnuplot).

    /usr/bin/python3 bench/report.py bench/results/<stamp>.jsonl
    /usr/bin/python3 bench/report.py --compare bench/results/compare-<stamp>.jsonl

With --compare (a run of bench/compare.sh) it writes only the section that
sets two wsfan binaries side by side, between the COMPARE_BEGIN and
COMPARE_END comments of docs/benchmarks.md (before the analysis when the file
has none yet); a plain run keeps that section where it is.

Every figure is the median of the repeats, with the spread (lowest..highest)
beside it; ratios are computed from medians of the same run. Targets from the
issue are checked here and printed as met or not met: nothing is asserted.
Hand-written analysis comes from bench/notes.md, included as it is."""
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ["wsfan", "nchan", "socketio"]
NAMES = {"wsfan": "wsfan", "nchan": "nchan", "socketio": "Socket.IO"}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def split_label(d):
    parts = d.get("label", "").split("/")
    return (parts + ["", "", ""])[:3]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def human(v, unit=""):
    if v is None:
        return "n/a"
    a = abs(v)
    if a >= 1e6:
        return "%.2fM%s" % (v / 1e6, unit)
    if a >= 1e4:
        return "%.0fk%s" % (v / 1e3, unit)
    if a >= 1e3:
        return "%.1fk%s" % (v / 1e3, unit)
    if a >= 100:
        return "%.0f%s" % (v, unit)
    return "%.2g%s" % (v, unit) if a < 10 else "%.1f%s" % (v, unit)


def spread(values, fmt=human):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = statistics.median(values)
    if len(values) == 1:
        return fmt(m)
    return "%s (%s..%s)" % (fmt(m), fmt(min(values)), fmt(max(values)))


def ms(v):
    return "n/a" if v is None else "%.2f" % (v / 1000.0)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.1fx" % (a / b)


class Run:
    def __init__(self, rows):
        self.rows = rows
        self.machine = next((d for d in rows if d.get("mode") == "machine"), {})
        self.commands = [d for d in rows if d.get("mode") == "command"]

    def of(self, mode, scenario=None, peer=None):
        out = []
        for d in self.rows:
            if d.get("mode") != mode:
                continue
            s, p, _ = split_label(d)
            if scenario and s != scenario:
                continue
            if peer and p != peer:
                continue
            out.append(d)
        return out

    def summary_values(self, scenario, peer, key):
        return [d.get(key) for d in self.of("summary", scenario, peer)
                if d.get("max_ok_rate", -1) > 0 or key in ("first_bad_rate",)]

    def limit(self, batch):
        return [d["messages_per_s"] for d in self.of("limit") if d["batch"] == batch]


def others_on_core(run, label, core=0):
    """Most CPU that other processes took on the server's core in any step of
    one ladder: the core's busy share less the measured servers' own."""
    worst = None
    for d in run.rows:
        if d.get("mode") == "ladder" and d.get("label") == label and d.get("core_busy_pct"):
            v = d["core_busy_pct"][core] - d.get("server_cpu_pct", 0)
            worst = v if worst is None else max(worst, v)
    return None if worst is None else max(worst, 0.0)


def ladder_table(run, scenario, out, with_half=True):
    head = "| peer | highest publish rate with loss < 0.1% (msg/s) | delivered msgs/s there | " \
           "server CPU there | p99 there (ms)"
    if with_half:
        head += " | p50 / p99 / p99.9 / max at half that rate (ms)"
    head += " | other processes on the server core (worst step)"
    out.append(head + " | repeats |")
    out.append("|" + " --- |" * (head.count("|") + 1))
    meds = {}
    for p in PEERS:
        sums = run.of("summary", scenario, p)
        if not sums:
            continue
        ok = [d for d in sums if d.get("max_ok_rate", -1) > 0]
        rate = [d["max_ok_rate"] for d in ok]
        deliv = [d["delivered_per_s_at_max"] for d in ok]
        cpu = [d.get("cpu_pct_at_max") for d in ok]
        p99 = [d.get("p99_us_at_max") for d in ok]
        meds[p] = med(deliv)
        row = "| %s | %s | %s | %s | %s" % (
            NAMES[p], spread(rate), spread(deliv),
            spread(cpu, lambda v: "%.0f%%" % v), spread(p99, ms))
        if with_half:
            h50 = med([d.get("half_p50_us") for d in ok])
            h99 = [d.get("half_p99_us") for d in ok]
            h999 = med([d.get("half_p999_us") for d in ok])
            hmax = med([d.get("half_max_us") for d in ok])
            row += " | %s / %s / %s / %s" % (ms(h50), spread(h99, ms), ms(h999), ms(hmax))
        row += " | %s" % spread([others_on_core(run, d["label"]) for d in sums], lambda v: "%.0f%%" % v)
        exhausted = sum(1 for d in sums if d.get("ladder_exhausted"))
        closed = sum(1 for d in sums if d.get("connections_closed"))
        notes = []
        if exhausted:
            notes.append("%d never failed: the ladder's top was reached" % exhausted)
        if closed:
            notes.append("%d closed connections" % closed)
        if len(ok) < len(sums):
            notes.append("%d with no loss-free step" % (len(sums) - len(ok)))
        row += " | %d%s |" % (len(sums), ("; " + "; ".join(notes)) if notes else "")
        out.append(row)
    return meds


def deploy_section(run, out):
    """Scenario 6: the clients of a restarted node reconnect at once with join since."""
    rows = [(e, run.of("resume", "deploy-" + e, "wsfan")) for e in ("memory", "redis")]
    if not any(ds for _, ds in rows):
        return
    out.append("")
    out.append("## 6. Deploy: 10,000 clients of a restarted node reconnect at once")
    out.append("")
    out.append("One wsfan node with 10,000 clients in 100 rooms, each of which has received a persisted "
               "message; the node is stopped (SIGTERM: every connection closed with 1001 at once) and started "
               "again on the same port. Every client reconnects at once (after a refused attempt, again in 50 "
               "to 150 ms) and joins with `since` the offset of the last message it saw; it has recovered "
               "when the `joined` reply and the messages it says were missed have arrived. With Redis a "
               "second node, not restarted, publishes one message to every room while the first is down, so "
               "each client recovers one message from the kept history. With the memory engine the history "
               "died with the process: every join answers `recovered: false` (the client must refetch), and "
               "the figure is the time of the recovery handshake alone. Times run from each client's close "
               "and from the moment the node answered again (its first handshake).")
    out.append("")
    out.append("| engine | recovered clients | since honoured / not | messages replayed | node down (s) | "
               "all recovered after the close (s) | after the node's return (s) | per client from its close "
               "p50 / p99 (ms) | from the return p50 / p99 (ms) | refused attempts | repeats |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for engine, ds in rows:
        if not ds:
            continue
        f1 = lambda v: "%.2f" % v  # noqa: E731
        f0 = lambda v: "%.0f" % v  # noqa: E731
        out.append("| %s | %s of %s | %s / %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %d |" % (
            engine, spread([d["recovered_conns"] for d in ds], f0), spread([d["conns"] for d in ds], f0),
            spread([d["since_recovered"] for d in ds], f0), spread([d["since_not_recovered"] for d in ds], f0),
            spread([d["missed_replayed"] for d in ds], f0), spread([d["down_s"] for d in ds], f1),
            spread([d["all_recovered_s"] for d in ds], f1), spread([d["after_up_s"] for d in ds], f1),
            spread([d["p50_ms"] for d in ds], f0), spread([d["p99_ms"] for d in ds], f0),
            spread([d["up_p50_ms"] for d in ds], f0), spread([d["up_p99_ms"] for d in ds], f0),
            spread([d["failed_attempts"] for d in ds], f0), len(ds)))


def probe_pass_ms(d):
    """Milliseconds the limit probe needs for one writev on each of its sockets."""
    return 1000.0 * d["conns"] / d["writes_per_s"] if d.get("writes_per_s") else None


def ratio_lines(meds, limits, out, label="delivered msgs/s"):
    w = meds.get("wsfan")
    if w is None:
        return
    parts = []
    for p in ("nchan", "socketio"):
        if meds.get(p):
            parts.append("%s %s" % (ratio(w, meds[p]), NAMES[p]))
    for b in (1, 4, 16):
        if limits.get(b):
            parts.append("%.0f%% of the limit probe at %d per write" % (100.0 * w / limits[b], b))
    out.append("")
    out.append("wsfan's %s: %s." % (label, ", ".join(parts)))


def loadgen_note(run, scenario, out):
    """Says where the load generator itself was the busier side."""
    steps = [d for d in run.of("ladder", scenario) if d.get("ok")]
    busy = [d for d in steps if d.get("loadgen_cpu_pct", 0) >= 90]
    if busy:
        peers = sorted({split_label(d)[1] for d in busy})
        out.append("")
        out.append("The load generator's core was 90%% busy or more in %d loss-free step(s) (%s): "
                   "there the figure is a lower bound of the server's capacity."
                   % (len(busy), ", ".join(NAMES.get(p, p) for p in peers)))


def chart(run, path):
    """Delivered rate and p99 latency against offered rate, fan-out scenario."""
    tmp = tempfile.mkdtemp(prefix="wsfan-chart-")
    plots_rate, plots_lat = [], []
    colors = {"wsfan": "#1b7837", "nchan": "#2166ac", "socketio": "#b2182b"}
    for p in PEERS:
        steps = run.of("ladder", "fanout", p)
        if not steps:
            continue
        by_rate = {}
        for d in steps:
            by_rate.setdefault(d["offered_rate"], []).append(d)
        fn = os.path.join(tmp, p + ".dat")
        with open(fn, "w") as f:
            for rate in sorted(by_rate):
                ds = by_rate[rate]
                f.write("%g %g %g %g\n" % (rate, med([d["delivered_per_s"] for d in ds]),
                                            max(med([d["lat_p99_us"] for d in ds]) / 1000.0, 0.01),
                                            rate * ds[0]["subs"] / ds[0]["rooms"]))
        plots_rate.append("'%s' using 1:2 with linespoints lw 2 pt 7 lc rgb '%s' title '%s'"
                          % (fn, colors[p], NAMES[p]))
        plots_lat.append("'%s' using 1:3 with linespoints lw 2 pt 7 lc rgb '%s' title '%s'"
                         % (fn, colors[p], NAMES[p]))
    if not plots_rate:
        return False
    fn = os.path.join(tmp, "wsfan.dat")
    if os.path.exists(fn):
        plots_rate.append("'%s' using 1:4 with lines dt 3 lc rgb '#777777' title 'offered deliveries'" % fn)
    limit_lines = []
    for b in (1, 16):
        v = med(run.limit(b))
        if v:
            limit_lines.append("%g title 'limit probe, %d msg per write' with lines dt 2 lw 1 lc rgb '%s'"
                               % (v, b, "#999999" if b == 1 else "#444444"))
    script = """
set terminal pngcairo size 1000,900 font 'DejaVu Sans,10'
set output '%s'
set multiplot layout 2,1 title 'Fan-out: 1 room, 1,000 subscribers, 1 publisher, 100-byte payload (server on one core)'
set logscale xy
set grid
set key left top
set xlabel 'offered publish rate (messages/s)'
set ylabel 'delivered messages/s'
set format y '%%.0s%%c'
plot %s
set key left top
set ylabel 'p99 latency (ms)'
set format y '%%g'
set yrange [0.1:*]
plot %s
unset multiplot
""" % (path, ", ".join(plots_rate + limit_lines), ", ".join(plots_lat))
    sf = os.path.join(tmp, "chart.gp")
    with open(sf, "w") as f:
        f.write(script)
    try:
        subprocess.run(["gnuplot", sf], check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        print("report: gnuplot failed: %s" % e, file=sys.stderr)
        return False
    return True


# ---------- bench/compare.sh: two wsfan binaries, before and after ----------
COMPARE_BEGIN = "<!-- compare:begin (bench/compare.sh and bench/report.py --compare write this section; " \
                "make bench keeps it) -->"
COMPARE_END = "<!-- compare:end -->"
TLS_BEGIN = "<!-- tls:begin (bench/tls.sh, make bench-tls, measures this section; make bench keeps it) -->"
TLS_END = "<!-- tls:end -->"
SIDES = ("before", "after")


def fn_name(fn):
    """callgrind_annotate's "file:function [object]" to the function alone, so
    that a function that moved to another file is still the same row."""
    fn = fn.split(" [")[0]
    return fn if fn.startswith("???") else fn.rsplit(":", 1)[-1]


def compare_section(run):
    c = next((d for d in run.rows if d.get("mode") == "compare"), None)
    if c is None:
        raise SystemExit("report: no compare line in this file: not a run of bench/compare.sh")
    m = run.machine
    out = [COMPARE_BEGIN, "## %s" % c["title"], ""]
    profs = {name: {t: [d for d in run.of("profile", name, t) if d.get("instructions_per_delivery")]
                    for t in SIDES} for name in ("profile", "profile-low")}
    sums = {(s, t): run.of("summary", s, t) for s in ("fanout", "rooms") for t in SIDES}
    out.append("Two wsfan binaries measured by `bench/compare.sh` on one machine in one sitting, each "
               "run alternating with the other (before, after, then after, before, ...) so that drift "
               "and a busy moment of the shared machine fall on both alike. The ladders are those of "
               "sections 1 and 2 (`bench/run.sh`'s own functions: the same rates, %s s steps, bisection "
               "and loss threshold, server pinned to core 0 with `--workers 1`, load generator on core "
               "1, one load generator binary for both) and the callgrind step is that of \"Instructions "
               "per delivery\", run also at a rate where the server under valgrind has time to spare: "
               "there every message is one `writev` per connection and the count repeats within about "
               "0.1%%, the row to judge the code by (at 100 msg/s the server under valgrind is nearly "
               "saturated, and how many frames share a `writev` depends on how much of the core it got). "
               "Each figure is the median of the repeats, the spread (lowest..highest) in brackets; the "
               "ratio is after / before, of the medians, and of the best repeats: other work on a shared "
               "machine only ever makes a repeat worse, so the best repeats are the least disturbed ones "
               "(the highest rate, the lowest latency; for callgrind the run with the most instructions "
               "per delivery, since a server that falls behind gathers frames into fewer `writev` calls "
               "and so spends fewer). Rows without a ratio are conditions of the run, not results."
               % next(("%g" % d.get("duration_s", 1) for d in run.of("ladder", "fanout")), "1"))
    out.append("")
    out.append("- Date: %s; %s, %s cores; load average %s when the comparison began, %s over its steps"
               % (m.get("date", "?"), m.get("cpu", "?"), m.get("cores", "?"), m.get("loadavg_at_start", "?"),
                  spread([d.get("loadavg") for d in run.rows if d.get("mode") == "ladder"],
                         lambda v: "%.2f" % v)))
    for t in SIDES:
        b = c[t]
        out.append("- %s: `%s` (source tree %s, sha256 %s)" % (
            t, b["path"].replace(ROOT + "/", ""), b.get("tree") or "unknown", b["sha256"][:12]))
    if c.get("same_binary"):
        out.append("- Both sides are the same binary: this is an A/A run, and its ratios show only the noise.")
    out.append("")
    out.append("| metric | before | after | ratio (after / before) | ratio of the best repeats |")
    out.append("| --- | --- | --- | --- | --- |")

    def row(name, values, fmt, best=None):
        """best: max or min, which repeat is the best one; None: no ratios (a condition, not a result)."""
        r = rb = ""
        if best:
            meds = [med(values[t]) for t in SIDES]
            r = "%.3f" % (meds[1] / meds[0]) if meds[0] and meds[1] is not None else "n/a"
            bests = [best([v for v in values[t] if v is not None] or [None]) for t in SIDES]
            rb = "%.3f" % (bests[1] / bests[0]) if bests[0] and bests[1] is not None else "n/a"
        out.append("| %s | %s | %s | %s | %s |" % (name, spread(values["before"], fmt), spread(values["after"], fmt),
                                                 r, rb))

    for name, prof in profs.items():
        if not (prof["before"] or prof["after"]):
            continue
        step = next((d for d in run.of("ladder", name)), {})
        what = "callgrind, 1,000 subscribers at %g msg/s for %g s" % (step.get("offered_rate", 0),
                                                                      step.get("duration_s", 0))
        row("instructions per delivery, %s (lower is better; %d+%d runs)"
            % (what, len(prof["before"]), len(prof["after"])),
            {t: [d["instructions_per_delivery"] for d in prof[t]] for t in SIDES}, lambda v: "%.1f" % v, max)
        row("%s: server CPU under valgrind (near 100%%: saturated, frames get gathered)" % what,
            {t: [d.get("server_cpu_pct") for d in run.of("ladder", name, t)] for t in SIDES},
            lambda v: "%.0f%%" % v)
    for s, name in (("fanout", "fan-out (1 room x 1,000)"), ("rooms", "rooms (100 x 50)")):
        ok = {t: [d for d in sums[(s, t)] if d.get("max_ok_rate", -1) > 0] for t in SIDES}
        if not any(sums[(s, t)] for t in SIDES):
            continue
        n = "%d+%d repeats" % tuple(len(sums[(s, t)]) for t in SIDES)
        row("%s: delivered msgs/s at the highest loss-free rate (higher is better; %s)" % (name, n),
            {t: [d["delivered_per_s_at_max"] for d in ok[t]] for t in SIDES}, human, max)
        row("%s: highest loss-free publish rate, msg/s" % name,
            {t: [d["max_ok_rate"] for d in ok[t]] for t in SIDES}, human, max)
        row("%s: server CPU there" % name,
            {t: [d.get("cpu_pct_at_max") for d in ok[t]] for t in SIDES}, lambda v: "%.0f%%" % v)
        row("%s: p50 at half that rate, ms" % name,
            {t: [d.get("half_p50_us") for d in ok[t]] for t in SIDES}, ms, min)
        row("%s: p99 at half that rate, ms" % name,
            {t: [d.get("half_p99_us") for d in ok[t]] for t in SIDES}, ms, min)
        row("%s: other processes on the server core, worst step" % name,
            {t: [others_on_core(run, d["label"]) for d in sums[(s, t)]] for t in SIDES},
            lambda v: "%.0f%%" % v)
    notes = []
    for s in ("fanout", "rooms"):
        for t in SIDES:
            ds = sums[(s, t)]
            for what, k in (("reached the ladder's top without failing", "ladder_exhausted"),
                            ("closed connections", "connections_closed")):
                k_n = sum(1 for d in ds if d.get(k))
                if k_n:
                    notes.append("%s %s: %d repeat(s) %s" % (s, t, k_n, what))
            none = sum(1 for d in ds if d.get("max_ok_rate", -1) <= 0)
            if none:
                notes.append("%s %s: %d repeat(s) with no loss-free step" % (s, t, none))
    if notes:
        out.append("")
        out.append("Note: " + "; ".join(notes) + ".")

    # Where the instructions go, per delivery, by function (callgrind's top 15 of each run;
    # a function outside one run's top 15 counts as missing there, not as zero).
    prof = profs["profile-low"] if profs["profile-low"]["before"] else profs["profile"]
    per = {t: {} for t in SIDES}
    for t in SIDES:
        for d in prof[t]:
            agg = {}
            for x in d.get("top", []):
                agg[fn_name(x["fn"])] = agg.get(fn_name(x["fn"]), 0) + x["ir"]
            for f, ir in agg.items():
                per[t].setdefault(f, []).append(ir / d["deliveries"])
    if per["before"] or per["after"]:
        names = sorted(set(per["before"]) | set(per["after"]),
                       key=lambda f: -max(med(per["after"].get(f, [])) or 0, med(per["before"].get(f, [])) or 0))
        out.append("")
        step = next((d for d in run.of("ladder", (prof["before"] or prof["after"])[0]["label"].split("/")[0])), {})
        out.append("Instructions per delivery by function, callgrind at %g msg/s (own instructions; callgrind's "
                   "15 busiest functions of each run, \"-\" where a function is not among them):"
                   % step.get("offered_rate", 0))
        out.append("")
        out.append("| function | before | after |")
        out.append("| --- | --- | --- |")
        for f in names[:15]:
            vals = [med(per[t].get(f, [])) for t in SIDES]
            out.append("| `%s` | %s | %s |" % (f, *("-" if v is None else "%.1f" % v for v in vals)))

    out.append("")
    done = next((d for d in run.rows if d.get("mode") == "compare_done"), {})
    out.append("Command (%s):" % ("%.1f minutes for this run" % (done["seconds"] / 60.0)
                                  if done.get("seconds") else "run time not recorded"))
    out.append("")
    out.append("```")
    out.append(c["cmd"])
    out.append("```")
    out.append("")
    out.append("which started each binary as `taskset -c 0 BINARY --listen 127.0.0.1:PORT --workers 1 "
               "--log-level warn` (under `valgrind --tool=callgrind --instr-atstart=no` for the callgrind "
               "step) and ran, for the before side in repeat 1 (the after side's commands differ only in "
               "label, port and PID):")
    out.append("")
    out.append("```")
    for cm in run.commands:
        if cm["peer"] == "before" and cm["repeat"] == 1:
            out.append(cm["cmd"].replace(ROOT + "/", ""))
    out.append("```")
    out.append(COMPARE_END)
    return out


# bench/scale.py writes this section; a plain run keeps it like the compare section.
SCALE_BEGIN = "<!-- scale:begin (bench/scale.py writes this section; make bench keeps it) -->"
SCALE_END = "<!-- scale:end -->"


def kept_section(md_path, begin, end):
    """The section between the begin and end markers of an existing docs/benchmarks.md, or None."""
    try:
        text = open(md_path).read()
    except OSError:
        return None
    a, b = text.find(begin), text.find(end)
    if a < 0 or b < a:
        return None
    return text[a:b + len(end)]


def replace_section(md_path, begin, end, section):
    """Puts section (markers included) in place of the old one between the same
    markers, or before the analysis when the file has none yet."""
    try:
        text = open(md_path).read()
    except OSError:
        text = "# Benchmarks\n"
    old = kept_section(md_path, begin, end)
    if old is not None:
        text = text.replace(old, section)
    else:
        for anchor in ("\n## Analysis", "\n## Exact commands"):
            i = text.find(anchor)
            if i >= 0:
                text = text[:i] + "\n" + section + "\n" + text[i:]
                break
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(md_path, "w") as f:
        f.write(text)


def write_compare(results, md_path):
    section = "\n".join(compare_section(Run(load(results))))
    replace_section(md_path, COMPARE_BEGIN, COMPARE_END, section)
    print("report: wrote the section \"%s\" of %s" % (section.split("\n")[1][3:], md_path))
    return 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--compare":
        return write_compare(sys.argv[2], sys.argv[3] if len(sys.argv) > 3
                             else os.path.join(ROOT, "docs", "benchmarks.md"))
    if len(sys.argv) < 2:
        print("usage: report.py RESULTS.jsonl [OUT.md]\n       report.py --compare COMPARE.jsonl [OUT.md]",
              file=sys.stderr)
        return 2
    run = Run(load(sys.argv[1]))
    md_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "benchmarks.md")
    png_path = os.path.join(os.path.dirname(md_path), "bench-fanout.png")
    m = run.machine
    limits = {b: med(run.limit(b)) for b in (1, 4, 16)}
    repeats = max([int(split_label(d)[2] or 0) for d in run.rows if d.get("label")] + [0])
    out = []
    out.append("# Benchmarks")
    out.append("")
    out.append("How fast wsfan delivers, next to the servers its users would otherwise pick, all measured in "
               "one run by the same load generator (`bench/loadgen.c`). This file is written by "
               "`make bench` (`bench/run.sh`, then `bench/report.py`); the analysis at the end comes from "
               "`bench/notes.md`. Every figure is the median of %d repeat(s), the spread (lowest..highest) "
               "in brackets." % repeats)
    out.append("")
    out.append("## Machine and run")
    out.append("")
    out.append("- Date: %s" % m.get("date", "?"))
    out.append("- Machine: %s, %s cores, %s; %s, kernel %s" % (m.get("cpu", "?"), m.get("cores", "?"),
                                                            m.get("memory", "?"), m.get("os", "?"),
                                                            m.get("kernel", "?")))
    out.append("- Load average when the run began: %s (the machine is shared: every JSON line records "
               "the load average of its moment)" % m.get("loadavg_at_start", "?"))
    out.append("- wsfan %s (`--workers 1`); %s with libnginx-mod-nchan %s (one worker process); "
               "Socket.IO %s on Node %s; %s" % (m.get("wsfan", "?"), m.get("nginx", "nginx").replace(
                   "nginx version: ", ""), m.get("nchan", "?"), m.get("socketio", "?"), m.get("node", "?"),
                   m.get("redis", "?").split(" sha=")[0]))
    out.append("- Servers pinned to core 0 (`taskset -c 0`), the load generator to core 1; all traffic "
               "on 127.0.0.1..127.0.0.4.")
    out.append("- Raw results: `bench/results/<stamp>.jsonl` (not committed; one JSON line per step).")
    out.append("")
    out.append("How to run: `make bench` (about 11 minutes; installs nginx, libnginx-mod-nchan, "
               "redis-server and gnuplot-nox from Debian and the Socket.IO packages of "
               "`bench/peers/package-lock.json` when missing). `make bench-smoke` checks the load "
               "generator's counts against wsfan in a few seconds (correctness only). `make bench-scale` "
               "(about 1 minute, run on its own) holds 100,000 connections across six nodes: its section "
               "below is kept by `make bench`.")
    out.append("")
    out.append("How the load generator counts: every subscriber must first receive a warm-up message "
               "in its room. Then each step publishes at a fixed rate for %s s; each payload carries "
               "the publisher, a sequence number and the CLOCK_MONOTONIC time at which the constant-rate "
               "schedule wanted it sent, so every delivery is checked for loss, duplicates and order, and "
               "its latency runs from that scheduled time to the moment the load generator reads it: a "
               "message the load generator sends late keeps its scheduled stamp, so the load "
               "generator's own lag counts and no stall hides (coordinated omission, avoided as wrk2 "
               "does; each step's JSON line also records `send_lag_max_us`, how far behind its schedule "
               "the load generator sent). A step is "
               "*loss-free* when at most 0.1%% of the expected deliveries are missing after a drain of "
               "up to 1 s, nothing was refused, duplicated, reordered or closed, and the deliveries "
               "kept up (the last one no later than 10%% past the step). The ladder doubles the rate "
               "and goes on past a failed step while it lost at most 1%%; then it bisects (three times, "
               "twice for two nodes) between the highest loss-free rate and the lowest failed rate "
               "above it, then measures latency at half the highest loss-free rate. Rates are total "
               "publishes per second; publishers are spread evenly over each interval."
               % next((str(d.get("duration_s")) for d in run.of("ladder")), "1"))

    out.append("")
    out.append("## 1. Fan-out: 1 room, 1,000 subscribers, 1 publisher, 100-byte payload")
    out.append("")
    meds = ladder_table(run, "fanout", out)
    ratio_lines(meds, limits, out)
    loadgen_note(run, "fanout", out)
    if chart(run, png_path):
        out.append("")
        out.append("![delivered rate and p99 latency against offered rate](bench-fanout.png)")

    out.append("")
    out.append("## 2. Rooms: 100 rooms x 50 subscribers, one publisher per room")
    out.append("")
    rmeds = ladder_table(run, "rooms", out)
    ratio_lines(rmeds, limits, out)
    loadgen_note(run, "rooms", out)

    out.append("")
    out.append("## 3. Idle: 10,000 connections, each joined to one of 100 rooms")
    out.append("")
    out.append("RSS delta per connection: the server's VmRSS after every connection joined and received "
               "one message, minus its VmRSS before, divided by 10,000 (kernel socket buffers are not "
               "in it). Idle CPU: the server's utime+stime over 3 idle seconds.")
    out.append("")
    out.append("| peer | RSS per connection (bytes) | idle CPU | RSS with 10k connections | repeats |")
    out.append("| --- | --- | --- | --- | --- |")
    idle_med = {}
    for p in PEERS:
        ds = run.of("idle", "idle", p)
        if not ds:
            continue
        per = [d["rss_per_conn_bytes"] for d in ds if d.get("conns") == 10000]
        idle_med[p] = med(per)
        out.append("| %s | %s | %s | %s | %d |" % (
            NAMES[p], spread(per, lambda v: "%.0f" % v),
            spread([d.get("server_cpu_pct") for d in ds], lambda v: "%.1f%%" % v),
            spread([d.get("rss_after_kb", 0) * 1024 for d in ds], lambda v: human(v, "B")), len(ds)))
    if idle_med.get("wsfan"):
        out.append("")
        out.append("wsfan's memory per idle connection: " + ", ".join(
            "%s of %s's" % ("%.0f%%" % (100.0 * idle_med["wsfan"] / idle_med[p]), NAMES[p])
            for p in ("nchan", "socketio") if idle_med.get(p)) + ".")

    out.append("")
    out.append("## 4. Connect storm: 10,000 connections, 500 in flight")
    out.append("")
    out.append("A handshake is TCP connect, HTTP upgrade, the server's first frame (wsfan's welcome, "
               "engine.io's open and Socket.IO's connect) and a join with its reply (nchan: the upgrade "
               "itself subscribes).")
    out.append("")
    out.append("| peer | handshakes/s | p50 (ms) | p99 (ms) | server CPU | failed | repeats |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    storm_med = {}
    for p in PEERS:
        ds = run.of("storm", "storm", p)
        if not ds:
            continue
        hs = [d["handshakes_per_s"] for d in ds]
        storm_med[p] = med(hs)
        out.append("| %s | %s | %s | %s | %s | %d | %d |" % (
            NAMES[p], spread(hs), spread([d["hs_p50_ms"] for d in ds], lambda v: "%.1f" % v),
            spread([d["hs_p99_ms"] for d in ds], lambda v: "%.1f" % v),
            spread([d.get("server_cpu_pct") for d in ds], lambda v: "%.0f%%" % v),
            sum(d.get("failed", 0) for d in ds), len(ds)))
    ratio_lines(storm_med, {}, out, "handshakes/s")

    out.append("")
    out.append("## 5. Two nodes and one redis-server")
    out.append("")
    out.append("Two server processes of the same kind and one redis-server, all three on core 0; 1,000 "
               "subscribers alternate between the two nodes, the publisher is on the first. Server CPU "
               "is the sum of the three processes. Redis commands are counted with INFO commandstats "
               "over the whole ladder, divided by the messages the server accepted (published less "
               "those refused with an error reply).")
    out.append("")
    out.append("| peer | highest publish rate with loss < 0.1% (msg/s) | delivered msgs/s there | "
               "CPU of all three there | p99 there (ms) | Redis PUBLISH per message | Redis commands per "
               "message | repeats |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    two_med = {}
    for p in PEERS:
        sums = run.of("summary", "twonode", p)
        if not sums:
            continue
        ok = [d for d in sums if d.get("max_ok_rate", -1) > 0]
        deliv = [d["delivered_per_s_at_max"] for d in ok]
        two_med[p] = med(deliv)
        pub_per, cmd_per = [], []
        for d in run.of("redis", "twonode", p):
            rep = split_label(d)[2]
            published = sum(s["published"] - s.get("errors", 0) for s in run.of("ladder", "twonode", p)
                            if split_label(s)[2] == rep)
            if published:
                st = d["commandstats"]
                pub_per.append(st.get("publish", 0) / published)
                cmd_per.append(sum(v for k, v in st.items() if not k.startswith("config")) / published)
        out.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
            NAMES[p], spread([d["max_ok_rate"] for d in ok]), spread(deliv),
            spread([d.get("cpu_pct_at_max") for d in ok], lambda v: "%.0f%%" % v),
            spread([d.get("p99_us_at_max") for d in ok], ms),
            spread(pub_per, lambda v: "%.2f" % v), spread(cmd_per, lambda v: "%.1f" % v), len(sums)))
    ratio_lines(two_med, {}, out)
    deploy_section(run, out)

    out.append("")
    out.append("## The physical-limit probe")
    out.append("")
    probe = run.of("limit")
    size = probe[0]["size"] if probe else 0
    out.append("`bench/limit.c`: the same bytes (one %d-byte WebSocket frame per message, the size of wsfan's "
               "message event here) pushed into 1,000 loopback TCP sockets by one thread on core 0 with one "
               "`writev` per socket per round and no protocol work at all; a thread on core 1 drains them. "
               "wsfan can pass it: it gathers every frame queued for a connection into one `writev`, so at "
               "high rates it writes more than 16 messages per call. One pass is one `writev` on every "
               "socket: the least time in which one core can hand a message to all 1,000 connections, "
               "so no server on that core can deliver to all of them with a lower p99." % size)
    out.append("")
    out.append("| messages per writev | messages/s | writev calls/s | one pass over the sockets (ms) | repeats |")
    out.append("| --- | --- | --- | --- | --- |")
    for b in (1, 4, 16):
        ds = [d for d in probe if d["batch"] == b]
        if ds:
            out.append("| %d | %s | %s | %s | %d |" % (
                b, spread([d["messages_per_s"] for d in ds]), spread([d["writes_per_s"] for d in ds]),
                spread([probe_pass_ms(d) for d in ds], lambda v: "%.2f" % v), len(ds)))

    prof = run.of("profile")
    if prof and prof[0].get("instructions_per_delivery"):
        d = prof[0]
        out.append("")
        out.append("## Instructions per delivery (callgrind)")
        out.append("")
        out.append("wsfan under `valgrind --tool=callgrind --instr-atstart=no`, instrumentation switched on "
                   "(`callgrind_control -i on`) only for one step of the fan-out scenario at 100 msg/s for "
                   "2 s: %s user-space instructions for %s deliveries, **%.0f instructions per delivery** "
                   "(kernel work not included). At this rate every message is its own `write` on every "
                   "connection; at high rates frames are gathered and the per-delivery cost falls. The "
                   "functions with the most instructions of their own:"
                   % (human(d["instructions"]), human(d["deliveries"]), d["instructions_per_delivery"]))
        out.append("")
        out.append("| instructions | share | function |")
        out.append("| --- | --- | --- |")
        for t in d.get("top", [])[:12]:
            fn = t["fn"].split(" [")[0]
            out.append("| %s | %.1f%% | `%s` |" % (human(t["ir"]), t["pct"], fn))

    # Targets of the issue, checked against this run's medians.
    out.append("")
    out.append("## Targets")
    out.append("")
    out.append("| target | measured | met |")
    out.append("| --- | --- | --- |")

    def target(name, value, ok):
        out.append("| %s | %s | %s |" % (name, value, "yes" if ok else ("no" if ok is not None else "n/a")))

    for scen, mm in (("fan-out", meds), ("rooms", rmeds)):
        w = mm.get("wsfan")
        for p, need in (("nchan", 3), ("socketio", 10)):
            target("%s: delivered msgs/s >= %dx %s" % (scen, need, NAMES[p]), ratio(w, mm.get(p)),
                   (w / mm[p] >= need) if w and mm.get(p) else None)
        target("%s: >= 50%% of the limit probe at 16 per write" % scen,
               "%.0f%%" % (100.0 * w / limits[16]) if w and limits.get(16) else "n/a",
               (w >= 0.5 * limits[16]) if w and limits.get(16) else None)
    wi = idle_med.get("wsfan")
    target("idle: < 1 KiB RSS per connection", "%.0f bytes" % wi if wi else "n/a", wi < 1024 if wi else None)
    others = [idle_med[p] for p in ("nchan", "socketio") if idle_med.get(p)]
    target("idle: lowest RSS per connection of all peers", "%.0f vs %s" % (
        wi, ", ".join("%.0f" % v for v in others)) if wi and others else "n/a",
        all(wi < v for v in others) if wi and others else None)
    h99 = med([d.get("half_p99_us") for d in run.of("summary", "fanout", "wsfan")])
    floor = med([probe_pass_ms(d) for d in probe if d["batch"] == 16])
    target("fan-out: p99 < 5 ms at half the highest loss-free rate",
           ("%s ms (one pass of the limit probe at 16 per write: %.2f ms)" % (ms(h99), floor) if floor
            else "%s ms" % ms(h99)) if h99 else "n/a", h99 < 5000 if h99 else None)
    sw, sn = storm_med.get("wsfan"), storm_med.get("nchan")
    target("connect storm: handshakes/s >= 1.5x nchan", ratio(sw, sn), (sw / sn >= 1.5) if sw and sn else None)
    tw, ts = two_med.get("wsfan"), two_med.get("socketio")
    target("two nodes: >= 3x Socket.IO with its Redis adapter", ratio(tw, ts), (tw / ts >= 3) if tw and ts else None)
    pubs = []
    for d in run.of("redis", "twonode", "wsfan"):
        rep = split_label(d)[2]
        published = sum(s["published"] - s.get("errors", 0) for s in run.of("ladder", "twonode", "wsfan")
                        if split_label(s)[2] == rep)
        if published:
            pubs.append(d["commandstats"].get("publish", 0) / published)
    mp = med(pubs)
    target("two nodes: one PUBLISH per message per room", "%.3f per message" % mp if mp is not None else "n/a",
           (abs(mp - 1) < 0.01) if mp is not None else None)

    for begin, end in ((SCALE_BEGIN, SCALE_END), (COMPARE_BEGIN, COMPARE_END), (TLS_BEGIN, TLS_END)):
        kept = kept_section(md_path, begin, end)
        if kept:
            out.append("")
            out.append(kept)

    notes = os.path.join(ROOT, "bench", "notes.md")
    if os.path.exists(notes):
        out.append("")
        with open(notes) as f:
            out.append(f.read().rstrip())

    out.append("")
    out.append("## Exact commands")
    out.append("")
    out.append("`make bench` ran `bench/run.sh`, which started each server as below (port and PID vary) "
               "and ran, in repeat 1:")
    out.append("")
    out.append("```")
    out.append("taskset -c 0 build/wsfan --listen 127.0.0.1:PORT --workers 1 --log-level warn "
               "[--redis redis://127.0.0.1:RPORT]")
    out.append("taskset -c 0 nginx -p DIR -c DIR/nginx.conf        # bench/run.sh start_nchan writes it")
    out.append("taskset -c 0 node bench/peers/socketio-server.js --port PORT [--redis redis://127.0.0.1:RPORT]")
    out.append("taskset -c 0 redis-server --port RPORT --bind 127.0.0.1 --save '' --appendonly no")
    seen = set()
    for c in run.commands:
        if c["repeat"] != 1:
            continue
        key = (c["scenario"], c["peer"])
        if key in seen:
            continue
        seen.add(key)
        out.append(c["cmd"].replace(ROOT + "/", ""))
    out.append("```")
    out.append("")
    with open(md_path, "w") as f:
        f.write("\n".join(out))
    print("report: wrote %s%s" % (md_path, " and " + png_path if os.path.exists(png_path) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
