#!/usr/bin/env bash
# Stage the egress-proxy image's whole root filesystem from a release binary, offline:
#
#   bash deploy/image-rootfs.sh [BINARY] [OUTDIR]
#       BINARY  default target/release/egress-proxy (what deploy/build.sh produces)
#       OUTDIR  default target/image-rootfs (emptied first)
#
# deploy/Dockerfile is `FROM scratch` + `COPY . /` of this directory, so the image holds exactly:
#   /usr/local/bin/egress-proxy           the binary, mode 0555
#   the ELF loader and the shared libraries `ldd` lists for it (glibc, libgcc_s, ...), at the
#     paths the loader looks for them, copied from the build host (Debian 12, where the binary
#     was linked against them)
#   /etc/ssl/certs/ca-certificates.crt    the build host's CA bundle (rustls-native-certs reads
#                                         it for the SSM client's TLS)
#   /etc/passwd, /etc/group               one user and group, nonroot = 65532 (as distroless)
#   /tmp                                  empty, mode 1777 (the process writes nothing; for tools)
# No shell, no package manager, nothing to pull from a registry: the image builds without network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin=${1:-target/release/egress-proxy}
out=${2:-target/image-rootfs}
[[ -x $bin ]] || { echo "image-rootfs: $bin missing; run bash deploy/build.sh first" >&2; exit 2; }
# OUTDIR is emptied first: only when it is new, empty, or an earlier root filesystem of ours.
if [[ -e $out ]] && [[ -n $(ls -A "$out" 2>/dev/null) ]] && [[ ! -x $out/usr/local/bin/egress-proxy ]]; then
  echo "image-rootfs: refusing to empty $out (not an earlier image root filesystem)" >&2; exit 2
fi
rm -rf "$out"
install -d -m 0755 "$out/usr/local/bin" "$out/etc/ssl/certs"
install -d -m 1777 "$out/tmp"
install -m 0555 "$bin" "$out/usr/local/bin/egress-proxy"

# Every absolute path ldd prints is a library or the loader; a "not found" is a hard failure.
if ldd "$bin" | grep -q 'not found'; then
  ldd "$bin" >&2; echo "image-rootfs: unresolved shared library" >&2; exit 1
fi
libs=$(ldd "$bin" | grep -o '/[^ )]*' | sort -u)
if [[ -z $libs ]]; then
  echo "image-rootfs: $bin is static; copying no libraries"
fi
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$out$lib"
done

ca=/etc/ssl/certs/ca-certificates.crt
[[ -r $ca ]] || { echo "image-rootfs: $ca missing (apt-get install ca-certificates)" >&2; exit 1; }
install -m 0444 "$ca" "$out$ca"

printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/etc/group"
chmod 0444 "$out/etc/passwd" "$out/etc/group"

echo "image-rootfs: staged $(find "$out" -type f | wc -l) files, $(du -sh "$out" | cut -f1) in $out:"
find "$out" -type f | sed "s|^$out||" | sort
