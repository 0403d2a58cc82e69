#!/usr/bin/env python3
"""Proxy mode only, A against B: hookgate builds (or one build with different environments) and nginx's
plain proxy_pass, in front of one nginx upstream answering 200, loaded in turn by wrk in short rounds.

    bench/ab-proxy.py NAME=BINARY[,VAR=VALUE...] ...   (nginx is always measured too)

A BINARY named floor_proxy is the bare hyper proxy of examples/floor_proxy.rs, with MODE=legacy or
MODE=conn (and "verify SECRET" after it to check signatures), e.g. floor=target/release/examples/floor_proxy,MODE=conn.

    ROUNDS=3 SECONDS=8 CONNECTIONS="16 64" LUA=bench/post.lua bench/ab-proxy.py \
        base=/tmp/hookgate-base new=target/release/hookgate

Each round measures every target at every connection count after 1 s of warm-up: requests/s, p99, and
CPU µs per request (user + system of the target's processes from /proc/PID/stat around the run, over
the requests wrk completed), and prints one line per measurement, then the median of each. Traffic goes
to loopback only; everything started is stopped at the end. Standard library only.
"""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """User + system ticks of `pid` and its children (nginx's workers)."""
    total = 0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for process in [str(pid), *children]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def wait_port(port, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def start_nginx(work, name, servers, started):
    folder = work / f"nginx-{name}"
    folder.mkdir()
    (folder / "nginx.conf").write_text(f"""worker_processes 2;
error_log {folder}/error.log warn;
pid {folder}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
  client_max_body_size 2m; client_body_buffer_size 1m;
  {servers}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-g", "daemon off;"])
    started.append(process)
    return process


def start_hookgate(work, name, binary, environment, upstream_port, secret, started):
    folder = work / f"hookgate-{name}"
    folder.mkdir()
    port = free_port()
    (folder / "hookgate.yaml").write_text(f"""listen: "127.0.0.1:{port}"
admin_listen: "127.0.0.1:0"
log:
  format: text
  level: warn,hookgate::cli=info,hookgate::server=info,hookgate::server::log=warn
sources:
  - name: main
    path: /hooks/main
    secrets:
      - value: "{secret}"
routes:
  - name: orders
    topics: ["order.*"]
    upstream: "http://127.0.0.1:{upstream_port}/orders"
delivery:
  mode: proxy
""")
    log = open(folder / "log", "w")
    command = [binary, "serve", "--config", str(folder / "hookgate.yaml")]
    if Path(binary).name == "floor_proxy":
        # The floor (examples/floor_proxy.rs): MODE is "legacy" or "conn", and "verify" checks signatures.
        mode = environment.get("MODE", "legacy").split()
        mode = [secret if word == "SECRET" else word for word in mode]
        command = [binary, f"127.0.0.1:{port}", f"http://127.0.0.1:{upstream_port}/orders", *mode]
    process = subprocess.Popen(
        command,
        stderr=log,
        env={**os.environ, **environment},
    )
    started.append(process)
    wait_port(port)
    return process, port


def wrk(port, path, connections, seconds, lua, work):
    threads = min(connections, 2)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", lua,
               f"http://127.0.0.1:{port}"]
    environment = {**os.environ, "TARGET_PATH": path, "BODY_FILE": str(work / "body"),
                   "HEADERS_FILE": str(work / "headers")}
    output = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=seconds + 30).stdout
    found = re.search(r"RESULT requests=(\d+) duration_us=(\d+) non2xx=(\d+).* p99_us=(\d+)", output)
    if not found:
        raise SystemExit(f"wrk said:\n{output}")
    requests, duration_us, non2xx, p99_us = map(int, found.groups())
    return requests - non2xx, duration_us, p99_us


def main():
    rounds = int(os.environ.get("ROUNDS", "3"))
    seconds = int(os.environ.get("SECONDS", "8"))
    connection_counts = [int(c) for c in os.environ.get("CONNECTIONS", "16 64").split()]
    lua = str((ROOT / os.environ.get("LUA", "bench/post.lua")).resolve())
    variants = []
    for argument in sys.argv[1:]:
        name, _, rest = argument.partition("=")
        binary, *settings = rest.split(",")
        variants.append((name, binary, dict(setting.split("=", 1) for setting in settings)))
    fixture = ROOT / "tests/fixtures/woocommerce/order-created"
    meta = json.loads(fixture.with_suffix(".json").read_text())
    started = []
    work = Path(tempfile.mkdtemp(prefix="hookgate-ab-"))
    try:
        (work / "body").write_bytes(fixture.with_suffix(".body").read_bytes())
        (work / "headers").write_text("".join(f"{k}: {v}\n" for k, v in meta["headers"].items()))
        upstream_port, nginx_port = free_port(), free_port()
        start_nginx(work, "upstream", f"server {{ listen 127.0.0.1:{upstream_port}; location / {{ return 200 'ok'; }} }}",
                    started)
        proxy = start_nginx(work, "proxy", f"""upstream fulfillment {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://fulfillment; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }}""", started)
        wait_port(upstream_port)
        wait_port(nginx_port)
        targets = [("nginx", proxy, nginx_port, "/hooks/main")]
        for name, binary, environment in variants:
            process, port = start_hookgate(work, name, binary, environment, upstream_port, meta["secret"], started)
            targets.append((name, process, port, "/hooks/main"))
        results = {}
        for round_number in range(1, rounds + 1):
            for connections in connection_counts:
                for name, process, port, path in targets:
                    wrk(port, path, connections, 1, lua, work)
                    before = cpu_ticks(process.pid)
                    served, duration_us, p99_us = wrk(port, path, connections, seconds, lua, work)
                    after = cpu_ticks(process.pid)
                    cpu_us = (after - before) * 1e6 / TICKS / max(served, 1)
                    rps = served * 1e6 / duration_us
                    results.setdefault((name, connections), []).append((rps, cpu_us, p99_us / 1000))
                    print(f"round {round_number} c={connections:<3} {name:<12} {rps:9.0f} req/s  "
                          f"{cpu_us:6.1f} µs CPU/request  p99 {p99_us / 1000:6.2f} ms", flush=True)
        print("\nmedians (req/s, CPU µs per request, p99 ms), and the ratio of CPU per request to nginx's:")
        for connections in connection_counts:
            nginx_cpu = statistics.median(r[1] for r in results[("nginx", connections)])
            nginx_rps = statistics.median(r[0] for r in results[("nginx", connections)])
            for name, *_ in targets:
                rows = results[(name, connections)]
                rps, cpu, p99 = (statistics.median(r[i] for r in rows) for i in range(3))
                print(f"c={connections:<3} {name:<12} {rps:9.0f} req/s ({rps / nginx_rps:4.2f}×)  "
                      f"{cpu:6.1f} µs ({cpu / nginx_cpu:4.2f}×)  p99 {p99:6.2f} ms")
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
