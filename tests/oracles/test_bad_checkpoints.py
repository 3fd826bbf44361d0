"""Broken GGUF files written here from Python: `hylo gguf-dump` must exit with status 1 (an error, not a
signal or an abort) and print a message naming the file, and the key or tensor where there is one."""
import os
import struct
import subprocess

import numpy as np
import pytest

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")

U32, STRING, ARRAY = 4, 8, 9


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def build(kvs=(), tensors=(), version=3, magic=b"GGUF", alignment=32, n_tensors=None, n_kv=None):
    """kvs: (key, type, value bytes); tensors: (name, dims, ggml type, data bytes, offset or None)."""
    out = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                              len(kvs) if n_kv is None else n_kv)
    for key, vtype, value in kvs:
        out += gguf_str(key) + struct.pack("<I", vtype) + value
    offset, placed = 0, []
    for name, dims, ttype, data, off in tensors:
        off = offset if off is None else off
        out += gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, off)
        placed.append((off, data))
        offset += -(-len(data) // alignment) * alignment
    out += b"\0" * (-len(out) % alignment)
    data_start = len(out)
    buf = bytearray(out)
    for off, data in placed:
        end = data_start + off + len(data)
        if end > len(buf):
            buf += b"\0" * (end - len(buf))
        buf[data_start + off:end] = data
    return bytes(buf)


F32 = np.arange(8, dtype=np.float32).tobytes()
ARCH = ("general.architecture", STRING, gguf_str("llama"))
GOOD_TENSORS = [("aa", [8], 0, F32, None), ("ab", [8], 0, F32, None)]

CASES = {
    "bad_magic": (build([ARCH], GOOD_TENSORS, magic=b"GGUX"), ["not a GGUF file"]),
    "version1": (build([ARCH], GOOD_TENSORS, version=1), ["version 1"]),
    "huge_string": (build([("general.name", STRING, struct.pack("<Q", 1 << 62) + b"xy")]), ["general.name"]),
    "huge_array": (build([("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 1 << 60))]),
                   ["tokenizer.ggml.tokens"]),
    "huge_counts": (build([ARCH], GOOD_TENSORS, n_kv=1 << 62), ["metadata count"]),
    "unknown_value_type": (build([("k", 77, b"\0" * 8)]), ["\"k\"", "unknown value type"]),
    "unknown_tensor_type": (build([ARCH], [("aa", [8], 99, F32, None)]), ["\"aa\"", "99"]),
    "misaligned": (build([ARCH], [("aa", [8], 0, F32, None), ("ab", [8], 0, F32, 36)]), ["\"ab\"", "alignment"]),
    "overlapping": (build([ARCH], [("aa", [8], 0, F32, None), ("ab", [8], 0, F32, 0)]), ["\"aa\"", "\"ab\"", "overlap"]),
    "out_of_file": (build([ARCH], [("aa", [8], 0, F32, None), ("ab", [1 << 20], 0, b"", 64)]), ["\"ab\"", "past the end"]),
    "duplicate_tensor": (build([ARCH], [("aa", [8], 0, F32, None), ("aa", [8], 0, F32, None)]), ["\"aa\"", "twice"]),
    "duplicate_key": (build([ARCH, ARCH], GOOD_TENSORS), ["general.architecture", "twice"]),
    "five_dims": (build([ARCH], [("aa", [1, 1, 1, 1, 8], 0, F32, None)]), ["\"aa\"", "n_dims"]),
    "bad_block_multiple": (build([ARCH], [("aa", [16], 8, b"\0" * 34, None)]), ["\"aa\"", "block size"]),
}


def run_dump(path, tmp_path):
    return subprocess.run([HYLO, "gguf-dump", str(path), "--out", str(tmp_path / "out.safetensors")],
                          capture_output=True, text=True)


def test_valid_control_file(tmp_path):
    p = tmp_path / "good.gguf"
    p.write_bytes(build([ARCH], GOOD_TENSORS))
    r = run_dump(p, tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_gguf_is_a_clean_error(case, tmp_path):
    data, needles = CASES[case]
    p = tmp_path / f"{case}.gguf"
    p.write_bytes(data)
    r = run_dump(p, tmp_path)
    assert r.returncode == 1, f"exit {r.returncode} (negative = killed by a signal): {r.stderr}"
    assert str(p) in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, f"missing {n!r} in {r.stderr!r}"
    assert not (tmp_path / "out.safetensors").exists()


def test_truncated_everywhere(tmp_path):
    full = build([ARCH, ("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2) + gguf_str("a") + gguf_str("b"))],
                 GOOD_TENSORS)
    # Each process start loads libtorch (about a second), so a spread of cuts over every region of the file;
    # the C++ test (tests/cpp/io/gguf_test.cpp) cuts at every byte.
    cuts = [0, 6, 20, 45, 100, 160, len(full) - 40, len(full) - 1]
    for n in cuts:
        if n >= len(full):
            continue
        p = tmp_path / f"cut{n}.gguf"
        p.write_bytes(full[:n])
        r = run_dump(p, tmp_path)
        assert r.returncode == 1, f"cut at {n}: exit {r.returncode}: {r.stderr}"
        assert str(p) in r.stderr
        p.unlink()
