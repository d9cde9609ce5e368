#!/usr/bin/env bash
# Build the image that ships and run it: deploy/Dockerfile (FROM scratch) over the root filesystem
# deploy/image-rootfs.sh stages from target/release/egress-proxy (built by deploy/smoke.sh in CI;
# this script never compiles). Built with buildah, run with podman + runc, no network but
# loopback. Through the running container:
#   - CONNECT to a name the policy maps to a loopback origin succeeds (200, the origin's body),
#   - CONNECT to a name on no rule gets 403,
#   - both decisions appear as JSON lines in the container's stdout,
#   - `podman stop` (SIGTERM) drains: a tunnel still open at the stop is held to the drain deadline,
#     then closed with its close line (bytes counted), and the container exits 0 (not 137).
# Installs buildah, podman and runc from Debian when missing. Called by .ci/run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin=target/release/egress-proxy
[[ -x $bin ]] || { echo "image-test: $bin missing; run bash deploy/build.sh (CI: deploy/smoke.sh) first" >&2; exit 2; }

if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends buildah podman runc >/dev/null
fi

work=$(mktemp -d)
name=egress-proxy-ci-$$
image=localhost/egress-proxy:ci-$$
origin_pid=""
# Private storage, vfs (no overlay mounts in this sandbox), runc, and no default ulimits (podman's
# default nofile/nproc settings fail under this sandbox's limits).
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
EOF
export CONTAINERS_CONF=$work/containers.conf
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
pod() { podman "${store[@]}" --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"; }
cleanup() {
  pod rm -f "$name" >/dev/null 2>&1 || true
  [[ -n $origin_pid ]] && kill "$origin_pid" 2>/dev/null || true
  [[ -n ${hold_pid:-} ]] && kill "$hold_pid" 2>/dev/null || true
  [[ -n ${client_pid:-} ]] && kill "$client_pid" 2>/dev/null || true
  # vfs layers are plain directories; unmount anything the runtime left and remove the lot.
  buildah "${store[@]}" rm --all >/dev/null 2>&1 || true
  pod rmi -af >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== image: stage the root filesystem and build deploy/Dockerfile with buildah"
bash deploy/image-rootfs.sh "$bin" "$work/rootfs"
buildah "${store[@]}" build --quiet --layers=false -f deploy/Dockerfile -t "$image" "$work/rootfs" >/dev/null
pod image inspect --format 'image {{.Id}} user={{.Config.User}} entrypoint={{.Config.Entrypoint}} cmd={{.Config.Cmd}} size={{.Size}}' "$image"
[[ $(pod image inspect --format '{{.Config.User}}' "$image") == 65532:65532 ]] \
  || { echo "image-test: image does not run as 65532:65532" >&2; exit 1; }

# Free loopback ports for the proxy's listeners and a local origin.
read -r p_proxy p_admin p_origin p_hold < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

# The origin: a one-file HTTP server on loopback whose body the test recognises.
mkdir -p "$work/www"; echo "origin-body-$$" >"$work/www/index.html"
python3 -m http.server "$p_origin" --bind 127.0.0.1 --directory "$work/www" >"$work/origin.log" 2>&1 &
origin_pid=$!
# A second origin that greets and then keeps the connection open: the tunnel the stop must drain.
python3 - "$p_hold" >"$work/hold.log" 2>&1 <<'PY' &
import socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    c, _ = srv.accept()
    c.sendall(b"held-open\n")
    while c.recv(4096):
        pass
    c.close()
PY
hold_pid=$!

install -d -m 0755 "$work/config"
cat >"$work/config/egress.yaml" <<EOF
mode: enforce
listeners: { explicit: "127.0.0.1:$p_proxy", admin: "127.0.0.1:$p_admin" }
allow:
  - name: local-origin
    hosts: [origin.test]
    ports: [$p_origin, $p_hold]
    tls: any            # the origin speaks plain HTTP inside the tunnel
resolver:
  hosts: { origin.test: [127.0.0.1] }
upstream: { deny_cidrs: [], allow_cidrs: [127.0.0.0/8] }
timeouts: { client_handshake: 5s, upstream_connect: 2s, idle: 30s, drain: 5s }
EOF
chmod 0644 "$work/config/egress.yaml"

echo "== run: podman --runtime runc, host network, read-only root, no capabilities"
pod run -d --name "$name" --network host --read-only --cap-drop ALL \
  -v "$work/config:/config:ro" "$image" run --config /config/egress.yaml >/dev/null

ready=""
for _ in $(seq 1 200); do
  if curl -fsS --max-time 1 "http://127.0.0.1:$p_admin/readyz" >/dev/null 2>&1; then ready=1; break; fi
  [[ $(pod inspect -f '{{.State.Running}}' "$name") == true ]] || break
  sleep 0.1
done
[[ -n $ready ]] || { echo "image-test: /readyz never answered"; pod logs "$name"; exit 1; }
for _ in $(seq 1 50); do curl -s --max-time 1 "http://127.0.0.1:$p_origin/" >/dev/null && break; sleep 0.1; done

fail() { echo "image-test: $*" >&2; pod logs "$name" >&2 || true; exit 1; }

body=$(curl -sS --max-time 10 -p -x "http://127.0.0.1:$p_proxy" "http://origin.test:$p_origin/") \
  || fail "CONNECT origin.test:$p_origin through the container failed"
[[ $body == "origin-body-$$" ]] || fail "unexpected body through the tunnel: $body"
echo "allowed: CONNECT origin.test:$p_origin -> origin answered"

code=$(curl -s -o /dev/null -w '%{http_connect}' --max-time 10 -p -x "http://127.0.0.1:$p_proxy" \
  "http://denied.test:$p_origin/" || true)
[[ $code == 403 ]] || fail "CONNECT denied.test expected 403, got '$code'"
echo "denied: CONNECT denied.test:$p_origin -> 403"

# Both decisions are on the container's stdout as JSON lines.
pod logs "$name" 2>/dev/null >"$work/decisions.log"
python3 - "$work/decisions.log" "$p_origin" <<'PY' || fail "decision lines missing"
import json, sys
lines = []
for raw in open(sys.argv[1]):
    try:
        lines.append(json.loads(raw))
    except ValueError:
        pass
port = int(sys.argv[2])
want = [("origin.test", "allow", "rule"), ("denied.test", "deny", "no_rule")]
for host, decision, reason in want:
    if not any(l.get("host") == host and l.get("port") == port and l.get("decision") == decision
               and l.get("reason") == reason and l.get("event") != "close" for l in lines):
        sys.exit(f"no decision line {host} {decision} {reason}")
print("decision lines: allow origin.test (rule local-origin), deny denied.test (no_rule)")
PY

echo "== podman stop: SIGTERM, drain, exit 0"
# Open a tunnel to the holding origin and keep it open across the stop; the client reports what
# it read before the proxy closed the tunnel.
python3 - "$p_proxy" "$p_hold" >"$work/client.log" 2>&1 <<'PY' &
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
s.sendall(f"CONNECT origin.test:{sys.argv[2]} HTTP/1.1\r\nHost: origin.test:{sys.argv[2]}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
print("connect:", head.split(b"\r\n")[0].decode(), flush=True)
s.sendall(b"hi\n")  # tls: any tunnels dial once the client speaks
got = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    got += d
    if got == b"held-open\n":
        print("greeting", flush=True)
print("eof after", got, flush=True)
PY
client_pid=$!
for _ in $(seq 1 100); do grep -q greeting "$work/client.log" && break; sleep 0.1; done
grep -q "connect: HTTP/1.1 200" "$work/client.log" && grep -q greeting "$work/client.log" \
  || fail "tunnel to the holding origin did not open: $(cat "$work/client.log")"
pod stop -t 20 "$name" >/dev/null
wait "$client_pid" || fail "the held tunnel's client failed: $(cat "$work/client.log")"
client_pid=""
grep -q "eof after" "$work/client.log" || fail "held tunnel not closed by the drain"
pod logs "$name" 2>/dev/null >"$work/decisions.log"
python3 - "$work/decisions.log" "$p_hold" <<'PY' || fail "no close line for the drained tunnel"
import json, sys
port = int(sys.argv[2])
for raw in open(sys.argv[1]):
    try:
        l = json.loads(raw)
    except ValueError:
        continue
    if l.get("event") == "close" and l.get("port") == port and (l.get("bytes_down") or 0) >= len("held-open\n"):
        print(f"drained tunnel closed with its close line: bytes_up={l.get('bytes_up')} bytes_down={l.get('bytes_down')}")
        sys.exit(0)
sys.exit(1)
PY
status=$(pod inspect -f '{{.State.ExitCode}}' "$name")
[[ $status == 0 ]] || fail "container exited $status after podman stop (137 = killed, did not drain)"
echo "image-test: built deploy/Dockerfile, served through the container, drained and exited 0"
