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
) = sys.argv[1:14]
rows = list(csv.DictReader(open(results_file), delimiter="\t"))
end_to_end = list(csv.DictReader(open(end_to_end_file), delimiter="\t"))
targets = ["upstream", "nginx", "hookgate-proxy", "hookgate-queue", "hookgate-queue-pg", "hookgate-queue-pg2"]
# The plot leaves the PostgreSQL targets to the table: their p99, hundreds of ms, would flatten the other lines.
plotted = targets[:4]
connections = sorted({int(r["connections"]) for r in rows})
by = {(r["target"], int(r["connections"])): r for r in rows}
colours = {"upstream": "#888888", "nginx": "#2a9d8f", "hookgate-proxy": "#e76f51", "hookgate-queue": "#264653"}


def svg_panel(x0, title, key, unit):
    width, height, left, bottom = 420, 300, 60, 40
    values = [float(by[(t, c)][key]) for t in plotted for c in connections if (t, c) in by]
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
    for target in plotted:
        points = [
            (px(i), height - bottom - (height - bottom - 30) * float(by[(target, c)][key]) / top)
            for i, c in enumerate(connections)
            if (target, c) in by
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colours[target]}" stroke-width="2"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colours[target]}"/>')
    return "\n".join(parts)


legend = "\n".join(
    f'<rect x="{870 + 0}" y="{40 + 20 * i}" width="12" height="12" fill="{colours[t]}"/>'
    f'<text x="{887}" y="{50 + 20 * i}" font-size="12">{t}</text>'
    for i, t in enumerate(plotted)
)
svg = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1010" height="310" font-family="sans-serif">\n'
    '<rect width="100%" height="100%" fill="white"/>\n'
    + svg_panel(0, "requests per second", "rps", "")
    + "\n"
    + svg_panel(430, "p99 latency (ms)", "p99_ms", "")
    + "\n"
    + legend
    + "\n</svg>\n"
)
open("bench/throughput.svg", "w").write(svg)

lines = [
    "# Benchmarks",
    "",
    f"Made by `bench/run` on {datetime.date.today().isoformat()}: {cores} cores, wrk {wrk_version.split()[-1] if wrk_version else '?'} "
    f"(2 threads), nginx {nginx_version}, {seconds} s per measurement after 1 s of warm-up, every target measured in the "
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
    "![requests per second and p99 latency against connections](bench/throughput.svg)",
    "",
    "(The plot leaves out the PostgreSQL targets, which are in the table: on this machine their p99 runs to hundreds "
    "of milliseconds and would flatten the other lines.)",
    "",
    "| target | connections | 2xx answers/s | p50 ms | p99 ms | p99.9 ms | non-2xx | 2xx answers/s vs nginx | p99 vs nginx |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for c in connections:
    nginx = by.get(("nginx", c))
    for t in targets:
        r = by.get((t, c))
        if not r:
            continue
        ratio = f"{float(r['rps']) / float(nginx['rps']):.2f}" if nginx else ""
        p99_ratio = f"{float(r['p99_ms']) / float(nginx['p99_ms']):.2f}" if nginx and float(nginx["p99_ms"]) else ""
        lines.append(
            f"| {t} | {c} | {float(r['rps']):,.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['non2xx']} | {ratio} | {p99_ratio} |"
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
    "sent once each at 16 connections by wrk (one thread, `bench/orders.lua`) to a fresh gateway on an empty spool, "
    "after the table above, with its queue-mode gateways stopped. accepted/s: the 2xx answers over the time to send "
    "them all and have them answered. delivered/s: the deliveries over the time from the first send until the last "
    "one's attempt ended with the upstream's 200 (the spool's `max(finished_at)` where `state = 'delivered'`, "
    "once the spool holds every accepted delivery as delivered). Same upstream, default `max_in_flight` (8 per "
    "route in each gateway); `hookgate-queue-pg2` again behind nginx.",
    "",
    "| target | deliveries | accepted/s | delivered/s | non-2xx |",
    "|---|---:|---:|---:|---:|",
]
for r in end_to_end:
    lines.append(
        f"| {r['target']} | {int(r['deliveries']):,} | {float(r['accepted_per_s']):,.0f} | "
        f"{float(r['delivered_per_s']):,.0f} | {r['non2xx']} |"
    )
lines.append("")
# What the numbers mean, what the profiler showed and what was changed: written by hand, kept across runs.
lines.append(open("bench/ANALYSIS.md").read())
open("BENCHMARKS.md", "w").write("\n".join(lines))
