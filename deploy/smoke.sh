#!/usr/bin/env bash
# The release binary the image is assembled from starts: build with deploy/build.sh (the binary
# deploy/image-rootfs.sh puts into the image; deploy/image-test.sh then runs the image), validate the shipped policy, start it, probe /healthz and /readyz,
# stop it with SIGTERM and expect a clean exit 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash deploy/build.sh
bin=target/release/egress-proxy
"$bin" validate --config config/egress.yaml

log=$(mktemp)
"$bin" run --config config/egress.yaml >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  curl -fsS --max-time 1 http://127.0.0.1:9090/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS --max-time 2 http://127.0.0.1:9090/healthz
curl -fsS --max-time 2 http://127.0.0.1:9090/readyz
# A denied CONNECT answers 403 without any network access.
code=$(curl -s -o /dev/null -w '%{http_connect}' --max-time 5 -x http://127.0.0.1:3128 https://example.invalid/ || true)
[ "$code" = 403 ] || { echo "smoke: expected 403 through the proxy, got $code"; cat "$log"; exit 1; }
kill -TERM "$pid"
wait "$pid"
echo "smoke: release binary built, validated the shipped policy, served, drained and exited 0"
