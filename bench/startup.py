"""Start-up to ready: starts `hookgate serve` N times and times the exec until /readyz answers 200.

    python3 bench/startup.py BINARY CONFIG ADMIN_PORT [RUNS]

Prints one line: `startup_ms median=.. max=.. runs=..`. The admin port must be the one CONFIG names.
"""

import http.client
import statistics
import subprocess
import sys
import time

binary, config, admin_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 10


def ready():
    try:
        connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=0.2)
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False


times = []
for _ in range(runs):
    started = time.perf_counter()
    process = subprocess.Popen([binary, "serve", "--config", config], stderr=subprocess.DEVNULL)
    while not ready():
        if process.poll() is not None:
            sys.exit(f"hookgate exited with {process.returncode} before it was ready")
        if time.perf_counter() - started > 10:
            process.kill()
            sys.exit("hookgate was not ready within 10 s")
        time.sleep(0.0005)
    times.append((time.perf_counter() - started) * 1000)
    process.terminate()
    process.wait()
print(f"startup_ms median={statistics.median(times):.1f} max={max(times):.1f} runs={runs}")
