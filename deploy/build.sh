#!/usr/bin/env bash
# Release build of egress-proxy. The image is assembled from exactly this output
# (deploy/image-rootfs.sh, then deploy/Dockerfile FROM scratch), so what CI builds is what ships.
#
#   bash deploy/build.sh                      # -> target/release/egress-proxy
#   bash deploy/build.sh --target TRIPLE      # -> target/TRIPLE/release/egress-proxy
#                                             #    (e.g. x86_64-unknown-linux-musl, if installed)
# Any further arguments go to cargo unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

args=(--release --locked)
out=target/release/egress-proxy
if [[ "${1:-}" == "--target" ]]; then
  [[ -n "${2:-}" ]] || { echo "build.sh: --target needs a target triple" >&2; exit 2; }
  args+=(--target "$2"); out="target/$2/release/egress-proxy"; shift 2
fi
# The deployed image reads its policy from `ssm:/...`; if the crate gates SSM behind a
# cargo feature, turn it on so the image can never ship without it.
if awk '/^\[features\]/{f=1;next} /^\[/{f=0} f && /^ssm[[:space:]]*=/{found=1} END{exit !found}' Cargo.toml; then
  args+=(--features ssm)
fi

cargo build "${args[@]}" "$@"
echo "built $out"
