#!/usr/bin/env bash
# Run HERE (the development machine), not on the GPU machine. The GPU machine has no network and lacks a few
# build inputs; this puts them under .deps/ (git-ignored) so that the device tool's `carry` can take them:
#   .deps/include/pcre2.h      the PCRE2 header (the GPU machine has only the runtime libpcre2-8.so.0);
#                              from Debian's libpcre2-dev, fetched with `apt-get download`
#   .deps/yaml-cpp/            yaml-cpp headers, shared library and CMake package (Debian's libyaml-cpp-dev +
#                              its runtime package), used there only when the machine has no yaml-cpp of its own
#   .deps/include/httplib.h    cpp-httplib's header, and .deps/httplib/ with it and Debian's libcpp-httplib.so
#                              (+ libbrotli), for hylo serve
#   .deps/teacher.part-*       the SmolLM2 teacher GGUF (98 MB) in pieces small enough for one call each
#   .deps/teacher.manifest     part names and sha256 sums of the parts and of the whole file
# Idempotent: what is already there and current is kept. See scripts/device/check.sh for how they are used.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$root/scripts/env.sh"
deps="$root/.deps"
part_mb="${HYLO_TEACHER_PART_MB:-48}"   # two parts of <= 48 MiB: each call stays under the 64 MiB carry limit
mkdir -p "$deps/include"
log() { printf '[prepare] %s\n' "$*"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

download() {  # download PKG...: .deb files into $tmp (refreshing the package lists once if needed)
  (cd "$tmp" && apt-get download "$@" >/dev/null 2>&1) ||
    { apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download "$@" >/dev/null); }
}

# --- pcre2.h ---------------------------------------------------------------------------------------------------
if [[ ! -f "$deps/include/pcre2.h" ]]; then
  download libpcre2-dev
  dpkg-deb -x "$tmp"/libpcre2-dev_*.deb "$tmp/pcre2"
  cp "$tmp/pcre2/usr/include/pcre2.h" "$deps/include/pcre2.h"
  log "pcre2.h from $(basename "$tmp"/libpcre2-dev_*.deb)"
fi

# --- yaml-cpp (headers + shared library + CMake package, relocatable) -------------------------------------------
if [[ ! -f "$deps/yaml-cpp/usr/include/yaml-cpp/yaml.h" ]]; then
  runtime="$(apt-cache depends libyaml-cpp-dev | awk '/Depends: libyaml-cpp[0-9]/ {print $2; exit}')"
  download libyaml-cpp-dev "$runtime"
  rm -rf "$deps/yaml-cpp"
  for deb in "$tmp"/libyaml-cpp*.deb; do dpkg-deb -x "$deb" "$deps/yaml-cpp"; done
  rm -rf "$deps/yaml-cpp/usr/share/doc"
  log "yaml-cpp from $(cd "$tmp" && ls libyaml-cpp*.deb | tr '\n' ' ')"
fi

# --- cpp-httplib (hylo serve): header + Debian's shared library and its brotli runtime ---------------------------
# Debian splits httplib into a declarations header and libcpp-httplib.so (built with OpenSSL, zlib and brotli; the
# GPU machine has libssl and zlib, brotli travels along). Configure there with -DHTTPLIB_ROOT=$PWD/.deps/httplib
# and put .deps/httplib/lib on LD_LIBRARY_PATH.
if [[ ! -f "$deps/httplib/include/httplib.h" ]]; then
  runtime="$(apt-cache depends libcpp-httplib-dev | awk '/Depends: libcpp-httplib[0-9]/ {print $2; exit}')"
  download libcpp-httplib-dev ${runtime:+"$runtime"} libbrotli1
  rm -rf "$deps/httplib" && mkdir -p "$deps/httplib/include" "$deps/httplib/lib"
  for deb in "$tmp"/libcpp-httplib*.deb "$tmp"/libbrotli1_*.deb; do dpkg-deb -x "$deb" "$tmp/httplib"; done
  cp "$tmp/httplib/usr/include/httplib.h" "$deps/httplib/include/"
  cp -P "$tmp"/httplib/usr/lib/x86_64-linux-gnu/lib{cpp-httplib,brotli}*.so* "$deps/httplib/lib/"
  cp "$tmp/httplib/usr/include/httplib.h" "$deps/include/httplib.h"
  log "cpp-httplib from $(cd "$tmp" && ls libcpp-httplib*.deb libbrotli1_*.deb | tr '\n' ' ')"
fi

# --- the teacher, in parts -----------------------------------------------------------------------------------
if [[ ! -f "$HYLO_TEACHER_GGUF" ]]; then
  log "teacher missing: running scripts/setup.sh first"
  bash "$root/scripts/setup.sh"
fi
whole_sha="$(sha256sum "$HYLO_TEACHER_GGUF" | cut -d' ' -f1)"
if [[ ! -f "$deps/teacher.manifest" ]] || ! grep -q "^$whole_sha $(basename "$HYLO_TEACHER_GGUF")\$" "$deps/teacher.manifest"; then
  rm -f "$deps"/teacher.part-* "$deps/teacher.manifest"
  split -b "${part_mb}M" -a 2 "$HYLO_TEACHER_GGUF" "$deps/teacher.part-"
  {
    echo "$whole_sha $(basename "$HYLO_TEACHER_GGUF")"
    (cd "$deps" && sha256sum teacher.part-* | awk '{print $1, $2}')
  } >"$deps/teacher.manifest.tmp"
  mv "$deps/teacher.manifest.tmp" "$deps/teacher.manifest"
fi
log "ready under $deps:"
(cd "$deps" && du -sh include yaml-cpp httplib teacher.part-* teacher.manifest | sed 's/^/  /')
parts=$(cd "$root" && ls .deps/teacher.part-* | sed 's/.*/"&"/' | paste -sd, -)
cat <<EOF
[prepare] device calls (the second within the machine's 30 s warm window, so the first part is still there;
          otherwise check.sh says which parts it lacks and the call is simply repeated with them):
  1) command: bash scripts/device/check.sh build-test
     carry:   [".deps/include", ".deps/yaml-cpp", ".deps/teacher.manifest", $(echo "$parts" | cut -d, -f1)]
  2) command: bash scripts/device/check.sh teacher
     carry:   [".deps/include", ".deps/yaml-cpp", ".deps/teacher.manifest", $(echo "$parts" | cut -d, -f2-)]
EOF
