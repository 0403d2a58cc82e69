"""Writes BENCHMARKS.md and bench/throughput.svg from a bench/run results file (no plotting library needed)."""

import csv
import datetime
import sys

(
    results_file,
    seconds,
    idle_kib,
    idle_queue_kib,
    peak_proxy_kib,
    peak_queue_kib,
    startup_proxy,
    startup_queue,
    cores,
    wrk_version,
    nginx_version,
    end_to_end_file,
    postgres_version,
    sustained_file,
    sustained_seconds,
) = sys.argv[1:16]
rows = list(csv.DictReader(open(results_file), delimiter="\t"))
end_to_end = list(csv.DictReader(open(end_to_end_file), delimiter="\t"))
sustained = list(csv.DictReader(open(sustained_file), delimiter="\t"))
targets = ["upstream", "nginx", "hookgate-proxy", "hookgate-queue", "hookgate-queue-pg", "hookgate-queue-pg2"]
# The plot leaves the PostgreSQL targets to the table: their p99, hundreds of ms, would flatten the other lines.
# Its CPU panel leaves out queue mode too, whose fsyncs and deliveries cost ten times proxy mode's per request.
plotted = targets[:4]
connections = sorted({int(r["connections"]) for r in rows})
by = {(r["target"], int(r["connections"])): r for r in rows}
colours = {"upstream": "#888888", "nginx": "#2a9d8f", "hookgate-proxy": "#e76f51", "hookgate-queue": "#264653"}


def number(row, key):
    """A figure of a results row, or None where bench/run had nothing to divide ("-")."""
    return None if row is None or row[key] in ("-", "") else float(row[key])


def svg_panel(x0, title, key, unit, drawn=plotted):
    width, height, left, bottom = 420, 300, 60, 40
    values = [number(by[(t, c)], key) for t in drawn for c in connections if (t, c) in by]
    values = [v for v in values if v is not None]
    top = max(values) * 1.1 if values else 1
    parts = [f'<text x="{x0 + width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    parts.append(f'<line x1="{x0 + left}" y1="{height - bottom}" x2="{x0 + width - 10}" y2="{height - bottom}" stroke="black"/>')
    parts.append(f'<line x1="{x0 + left}" y1="30" x2="{x0 + left}" y2="{height - bottom}" stroke="black"/>')
    for i in range(5):
        value = top * i / 4
        y = height - bottom - (height - bottom - 30) * i / 4
        parts.append(f'<text x="{x0 + left - 5}" y="{y + 4}" text-anchor="end" font-size="10">{value:,.0f}{unit}</text>')
    def px(index):
        return x0 + left + (width - left - 30) * (index / max(1, len(connections) - 1))
    for index, c in enumerate(connections):
        parts.append(f'<text x="{px(index)}" y="{height - bottom + 15}" text-anchor="middle" font-size="10">{c}</text>')
    parts.append(f'<text x="{x0 + width / 2}" y="{height - 5}" text-anchor="middle" font-size="11">connections</text>')
    for target in drawn:
        points = [
            (px(i), height - bottom - (height - bottom - 30) * number(by[(target, c)], key) / top)
            for i, c in enumerate(connections)
            if number(by.get((target, c)), key) is not None
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colours[target]}" stroke-width="2"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colours[target]}"/>')
    return "\n".join(parts)


legend = "\n".join(
    f'<rect x="{1300 + 0}" y="{40 + 20 * i}" width="12" height="12" fill="{colours[t]}"/>'
    f'<text x="{1317}" y="{50 + 20 * i}" font-size="12">{t}</text>'
    for i, t in enumerate(plotted)
)
svg = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1440" height="310" font-family="sans-serif">\n'
    '<rect width="100%" height="100%" fill="white"/>\n'
    + svg_panel(0, "requests per second", "rps", "")
    + "\n"
    + svg_panel(430, "p99 latency (ms)", "p99_ms", "")
    + "\n"
    + svg_panel(860, "CPU µs per request (target's processes)", "cpu_us", "", plotted[:3])
    + "\n"
    + legend
    + "\n</svg>\n"
)
open("bench/throughput.svg", "w", encoding="utf-8").write(svg)

lines = [
    "# Benchmarks",
    "",
    f"Made by `bench/run` on {datetime.date.today().isoformat()}: {cores} cores, wrk {wrk_version.split()[-1] if wrk_version else '?'} "
    f"(2 threads, and 1 for the distinct orders), nginx {nginx_version}, {seconds} s per measurement after 1 s of warm-up, every target measured in the "
    "same run at the same connection counts. The load: POSTs of the signed `order-created` fixture (3,393 bytes) with "
    "WooCommerce's headers. The upstream is nginx answering 200 from memory; `nginx` is nginx `proxy_pass` to it with "
    "kept-alive upstream connections (it verifies nothing); hookgate verifies every request. `hookgate-queue` spools "
    f"in SQLite; `hookgate-queue-pg` in PostgreSQL {postgres_version} (a throwaway server on this machine, "
    "`scripts/postgres`, default settings, fsync on), and `hookgate-queue-pg2` is two replicas on one PostgreSQL "
    "database with nginx in front balancing across both, so its row includes one nginx hop more than the others. "
    "Each target on PostgreSQL has a database of its own. Load generator, upstream, PostgreSQL and target share the "
    "machine's cores, which are shared with other work too: figures move by 10 % or more from run to run, so compare "
    "the ratios within one run.",
    "",
    "![requests per second, p99 latency and CPU µs per request against connections](bench/throughput.svg)",
    "",
    "(The plot leaves out the PostgreSQL targets, which are in the table: on this machine their p99 runs to hundreds "
    "of milliseconds and would flatten the other lines. Its CPU panel leaves out queue mode too, which spends many "
    "times proxy mode's CPU per request on its commits and deliveries.)",
    "",
    "The CPU columns: the CPU time (user + system, from `/proc/PID/stat`) used by the target's processes between "
    "just before and just after the measured run, over the requests wrk completed in it. The target's processes: "
    "for `nginx` its master and workers (a nginx of its own, apart from the upstream's), for hookgate its one "
    "process, for `hookgate-queue-pg2` both replicas and the nginx in front of them, for `upstream` the upstream's "
    "nginx. `vs nginx` is that figure over nginx's at the same connections. `upstream CPU` is the upstream nginx's "
    "CPU time over the requests it served in the same time (its `stub_status` count), whoever sent them; "
    "`PostgreSQL CPU` is the postmaster's and all its children's over the requests wrk completed. A queue-mode "
    "gateway also delivers during its run, and the queue-mode gateways measured before it are still delivering "
    "their backlog (one order, one at a time) in the background: so the upstream's figure in the queue-mode rows "
    "is per delivery it received, and the PostgreSQL figure of `hookgate-queue-pg2` includes the work of "
    "`hookgate-queue-pg`'s backlog. The end-to-end measurements below run one gateway at a time.",
    "",
    "| target | connections | 2xx answers/s | p50 ms | p99 ms | p99.9 ms | non-2xx | 2xx answers/s vs nginx | p99 vs nginx "
    "| CPU µs/request | vs nginx | upstream CPU µs/request | PostgreSQL CPU µs/request |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


def ratio(value, base):
    return f"{value / base:.2f}" if value is not None and base else ""


def shown(value):
    return "" if value is None else f"{value:,.1f}"


for c in connections:
    nginx = by.get(("nginx", c))
    for t in targets:
        r = by.get((t, c))
        if not r:
            continue
        lines.append(
            f"| {t} | {c} | {float(r['rps']):,.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['non2xx']} | "
            f"{ratio(number(r, 'rps'), number(nginx, 'rps'))} | {ratio(number(r, 'p99_ms'), number(nginx, 'p99_ms'))} | "
            f"{shown(number(r, 'cpu_us'))} | {ratio(number(r, 'cpu_us'), number(nginx, 'cpu_us'))} | "
            f"{shown(number(r, 'upstream_cpu_us'))} | {shown(number(r, 'postgres_cpu_us'))} |"
        )
lines += [
    "",
    f"hookgate's memory: {int(idle_kib) / 1024:.1f} MiB resident when idle in proxy mode and "
    f"{int(idle_queue_kib) / 1024:.1f} MiB in queue mode (after start); peak resident (VmHWM) over the whole run, "
    f"up to {max(connections)} connections: {int(peak_proxy_kib) / 1024:.1f} MiB in proxy mode and {int(peak_queue_kib) / 1024:.1f} MiB "
    "in queue mode.",
    "",
    "Start-up to ready (exec until `/readyz` answers 200, `bench/startup.py`): "
    + "; ".join(
        f"{mode} mode {dict(kv.split('=') for kv in line.split())['median']} ms median, "
        f"{dict(kv.split('=') for kv in line.split())['max']} ms at most over {dict(kv.split('=') for kv in line.split())['runs']} starts"
        for mode, line in (startup_proxy.split(" ", 1), startup_queue.split(" ", 1))
    )
    + ".",
    "",
    "Queue mode against proxy mode: "
    + ", ".join(
        f"{100 * float(by[('hookgate-queue', c)]['rps']) / float(by[('hookgate-proxy', c)]['rps']):.0f} % at {c} connection{'s' if c != 1 else ''}"
        for c in connections
        if ("hookgate-queue", c) in by and ("hookgate-proxy", c) in by
    )
    + ".",
    "",
    "Queue mode on PostgreSQL against queue mode on SQLite: "
    + "; ".join(
        f"at {c} connection{'s' if c != 1 else ''} one replica "
        f"{100 * float(by[('hookgate-queue-pg', c)]['rps']) / float(by[('hookgate-queue', c)]['rps']):.0f} %, two "
        f"{100 * float(by[('hookgate-queue-pg2', c)]['rps']) / float(by[('hookgate-queue', c)]['rps']):.0f} %"
        for c in connections
        if all((t, c) in by for t in ["hookgate-queue", "hookgate-queue-pg", "hookgate-queue-pg2"])
    )
    + ". Every delivery of this load is about the same order: on PostgreSQL each replica's batch takes that order's "
    "lock, so two replicas store one after the other.",
    "",
    "## End to end with distinct orders",
    "",
    f"{int(end_to_end[0]['deliveries']) if end_to_end else 0:,} deliveries of the same fixture, each with an order id of "
    "its own (so per-resource order does not make them wait for each other) and its own WooCommerce signature, "
    "sent once each at 16 connections by wrk (one thread, `bench/orders.lua`), after the table above, with its "
    "queue-mode gateways stopped: to hookgate-proxy (the one of the table above), then to each queue mode on a fresh "
    "gateway and an empty spool. accepted/s: the 2xx answers over the time to send them all and have them answered. "
    "delivered/s: the deliveries over the time from the first send until the last one's attempt ended with the "
    "upstream's 200 (the spool's `max(finished_at)` where `state = 'delivered'`, once the spool holds every "
    "accepted delivery as delivered); proxy mode has delivered each one before it answers, so there the two are one "
    "figure. `vs proxy`: delivered/s over hookgate-proxy's. CPU µs/delivery: the gateway's processes (for "
    "`hookgate-queue-pg2` both replicas and the nginx in front) from just before the first send until every one "
    "was delivered, over the deliveries; PostgreSQL's likewise. Same upstream, default `max_in_flight` (8 per "
    "route in each gateway).",
    "",
    "| target | deliveries | accepted/s | delivered/s | vs proxy | non-2xx | CPU µs/delivery | PostgreSQL CPU µs/delivery |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
e2e_by = {r["target"]: r for r in end_to_end}
for r in end_to_end:
    lines.append(
        f"| {r['target']} | {int(r['deliveries']):,} | {float(r['accepted_per_s']):,.0f} | "
        f"{float(r['delivered_per_s']):,.0f} | {ratio(number(r, 'delivered_per_s'), number(e2e_by.get('hookgate-proxy'), 'delivered_per_s'))} | "
        f"{r['non2xx']} | {shown(number(r, 'cpu_us'))} | {shown(number(r, 'postgres_cpu_us'))} |"
    )
sustained_proxy = next((r for r in sustained if r["target"] == "hookgate-proxy"), None)
sustained_queue = [r for r in sustained if r["target"] == "hookgate-queue"]
lines += [
    "",
    "## Sustained, with distinct orders",
    "",
    f"The same kind of load (`bench/orders.lua`, an order of its own for each delivery) at 64 connections for a "
    f"fixed time: hookgate-proxy for {seconds} s, then a fresh hookgate-queue (SQLite) for {sustained_seconds} s, "
    "twice back to back on the same gateway, without waiting between the runs. The backlog is the deliveries still "
    "pending in the spool when wrk stopped (read at once: `state = 'pending'`). delivered in the run: the "
    "deliveries the spool marked delivered during it. delivered/s: the run's deliveries (those stored by the time "
    "its wrk stopped, after the run before's) over the time from its first send until the last of them was "
    "delivered, waiting for the spool to empty after the second run: the issue's \"accepted during a run ÷ time "
    "until the last is delivered\". For proxy mode, its 2xx answers/s. CPU µs/delivery: the gateway's, over both "
    "runs and the wait until the spool was empty, over every delivery (proxy mode: over its run).",
    "",
    "| target | run | seconds | accepted | accepted/s | p99 ms | non-2xx | delivered in the run | backlog at the end | delivered/s | vs proxy | CPU µs/delivery |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in sustained:
    ran_out = " (sent all it had)" if r["sent"] == r["orders"] else ""
    lines.append(
        f"| {r['target']} | {r['run']} | {r['seconds']}{ran_out} | {int(r['accepted']):,} | {float(r['accepted_per_s']):,.0f} | "
        f"{r['p99_ms']} | {r['non2xx']} | {int(r['delivered_in_run']):,} | {int(r['backlog']):,} | "
        f"{float(r['delivered_per_s']):,.0f} | {ratio(number(r, 'delivered_per_s'), number(sustained_proxy, 'delivered_per_s'))} | "
        f"{shown(number(r, 'cpu_us'))} |"
    )


# Issue 15's targets, each a ratio of this run's figures; "not yet" where this run does not meet one.
def verdict(met):
    return "yes" if met else "**not yet**"


def at(target, c, key):
    return number(by.get((target, c)), key)


target_rows = []
for c in (16, 64):
    proxy_cpu, nginx_cpu = at("hookgate-proxy", c, "cpu_us"), at("nginx", c, "cpu_us")
    proxy_rps, nginx_rps = at("hookgate-proxy", c, "rps"), at("nginx", c, "rps")
    proxy_p99, nginx_p99 = at("hookgate-proxy", c, "p99_ms"), at("nginx", c, "p99_ms")
    if None in (proxy_cpu, nginx_cpu, proxy_rps, nginx_rps, proxy_p99, nginx_p99):
        continue
    target_rows += [
        f"| 1. proxy mode, CPU per request ≤ 1.2× nginx's, {c} connections | {proxy_cpu:.1f} µs against {nginx_cpu:.1f}: "
        f"{proxy_cpu / nginx_cpu:.2f}× | {verdict(proxy_cpu <= 1.2 * nginx_cpu)} |",
        f"| 1. proxy mode, requests/s ≥ 1.0× nginx's, {c} connections | {proxy_rps:,.0f} against {nginx_rps:,.0f}: "
        f"{proxy_rps / nginx_rps:.2f}× | {verdict(proxy_rps >= nginx_rps)} |",
        f"| 1. proxy mode, p99 ≤ nginx's, {c} connections | {proxy_p99:.2f} ms against {nginx_p99:.2f}: "
        f"{proxy_p99 / nginx_p99:.2f}× | {verdict(proxy_p99 <= nginx_p99)} |",
    ]
proxy_delivered = number(sustained_proxy, "delivered_per_s")
for r in sustained_queue:
    delivered = number(r, "delivered_per_s")
    if proxy_delivered:
        target_rows.append(
            f"| 2. queue mode (SQLite), sustained run {r['run']}: delivered/s ≥ 0.7× proxy mode's requests/s "
            f"(both distinct orders, 64 connections) | {delivered:,.0f} against {proxy_delivered:,.0f}: "
            f"{delivered / proxy_delivered:.2f}× | {verdict(delivered >= 0.7 * proxy_delivered)} |"
        )
if len(sustained_queue) == 2:
    first, second = (int(r["backlog"]) for r in sustained_queue)
    target_rows.append(
        f"| 2. queue mode (SQLite): the backlog at the end of a {sustained_seconds} s run does not grow run over run "
        f"| {first:,} after the first run, {second:,} after the second | {verdict(second <= first)} |"
    )
e2e_proxy = number(e2e_by.get("hookgate-proxy"), "delivered_per_s")
for name, label in [("hookgate-queue", "SQLite"), ("hookgate-queue-pg", "PostgreSQL, one replica"),
                    ("hookgate-queue-pg2", "PostgreSQL, two replicas")]:
    delivered = number(e2e_by.get(name), "delivered_per_s")
    if delivered is not None and e2e_proxy:
        target_rows.append(
            f"| {'3' if 'pg' in name else '2'}. queue mode ({label}), end to end with {int(e2e_by[name]['deliveries']):,} "
            f"distinct orders at 16 connections: delivered/s against proxy mode's | {delivered:,.0f} against "
            f"{e2e_proxy:,.0f}: {delivered / e2e_proxy:.2f}× | "
            + ("recorded (no target)" if "pg" in name else verdict(delivered >= 0.7 * e2e_proxy) + " (0.7×)")
            + " |"
        )
idle_mib = max(int(idle_kib), int(idle_queue_kib)) / 1024
peak_mib = max(int(peak_proxy_kib), int(peak_queue_kib)) / 1024
ready_ms = max(float(dict(kv.split("=") for kv in line.split(" ", 1)[1].split())["median"]) for line in (startup_proxy, startup_queue))
target_rows += [
    f"| 4. idle RSS < 15 MiB | {int(idle_kib) / 1024:.1f} MiB proxy mode, {int(idle_queue_kib) / 1024:.1f} MiB queue mode "
    f"| {verdict(idle_mib < 15)} |",
    f"| 4. peak RSS < 40 MiB at 64 connections | {int(peak_proxy_kib) / 1024:.1f} MiB proxy mode, "
    f"{int(peak_queue_kib) / 1024:.1f} MiB queue mode (over the whole table) | {verdict(peak_mib < 40)} |",
    f"| 4. ready < 100 ms | {ready_ms:.1f} ms median at most (the slower mode) | {verdict(ready_ms < 100)} |",
]
lines += [
    "",
    "## Issue 15's targets in this run",
    "",
    "Each figure is from the tables above, all from this one run. Target 4's test suites are not measured here.",
    "",
    "| target | this run | met |",
    "|---|---|---|",
    *target_rows,
    "",
]
# What the numbers mean, what the profiler showed and what was changed: written by hand, kept across runs.
lines.append(open("bench/ANALYSIS.md", encoding="utf-8").read())
open("BENCHMARKS.md", "w", encoding="utf-8").write("\n".join(lines))
