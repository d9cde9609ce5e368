#!/usr/bin/env python3
"""Anonymous memory of a proxy that nobody scrapes, across many short tunnels: it must level
off after the first few thousand, not grow with every connection. (The Prometheus exporter
keeps each histogram sample until an upkeep pass folds it into its bucket; a proxy whose
/metrics nobody reads relies on `metrics::keep_up_periodically` for that.)

Runs BINARY on a temp config, makes N CONNECT tunnels one after another to a loopback origin
that closes at once, and prints RssAnon at the start and after each quarter, each read one
memory-release period (10 s) after the quarter's last tunnel. Never reads /metrics.

    python3 benches/unscraped_memory.py target/release/egress-proxy 40000
"""
import re, socket, subprocess, sys, tempfile, threading, time

binary, n = sys.argv[1], int(sys.argv[2])
origin = socket.socket()
origin.bind(("127.0.0.1", 0))
origin.listen(512)
port = origin.getsockname()[1]


def serve():
    while True:
        conn, _ = origin.accept()
        conn.close()


threading.Thread(target=serve, daemon=True).start()
config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
config.write(f"""listeners: {{ explicit: 127.0.0.1:0, admin: 127.0.0.1:0 }}
allow:
  - {{ name: a, hosts: [a.test], ports: [{port}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ a.test: 127.0.0.1 }} }}
""")
config.close()
proxy = subprocess.Popen([binary, "run", "--config", config.name],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
explicit = None
while explicit is None:
    line = proxy.stderr.readline()
    if not line:
        sys.exit("the proxy exited before listening")
    found = re.search(r"listening: explicit on (\S+):(\d+)", line)
    if found:
        explicit = (found.group(1), int(found.group(2)))
threading.Thread(target=lambda: [None for _ in proxy.stderr], daemon=True).start()


def anon_kib():
    with open(f"/proc/{proxy.pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon"):
                return int(line.split()[1])


RELEASE_PERIOD = 11
time.sleep(RELEASE_PERIOD)
print(f"tunnels {0:>7}  RssAnon {anon_kib():>6} KiB", flush=True)
request = f"CONNECT a.test:{port} HTTP/1.1\r\nHost: a.test:{port}\r\n\r\n".encode()
for i in range(1, n + 1):
    with socket.create_connection(explicit) as s:
        s.sendall(request)
        s.recv(4096)
    if i % max(n // 4, 1) == 0:
        time.sleep(RELEASE_PERIOD)
        print(f"tunnels {i:>7}  RssAnon {anon_kib():>6} KiB", flush=True)
proxy.terminate()
proxy.wait()
