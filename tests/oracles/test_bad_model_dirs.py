"""Broken model directories -- config.json and safetensors -- through the CLI: `hylo inspect` (config and
tensor headers) and `hylo logits` (which loads the weights) must exit with status 1 (an error, never a signal)
and print a message naming the file and the field or tensor. The parsers' own corpora are in tests/cpp/io;
broken GGUFs in test_bad_checkpoints.py; broken tokenizers in test_tokenizer_parity.py."""
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("good")
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    return d


def run(*args):
    return subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True)


def assert_clean_error(r, *needles):
    assert r.returncode == 1, f"exit {r.returncode} (negative = signal)\n{r.stderr}"
    assert "error:" in r.stderr
    for n in needles:
        assert n in r.stderr, f"{n!r} not in: {r.stderr}"


def copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_good_dir_loads(good_dir):
    assert run("inspect", good_dir).returncode == 0
    assert run("logits", good_dir, "--ids", "1 2 3", "--out", good_dir.parent / "l.safetensors").returncode == 0


CONFIG_CASES = {
    "bad_json": (lambda c: "{\"vocab_size\": 64,", ["config.json", "JSON"]),
    "unknown_arch": (lambda c: json.dumps({**c, "architectures": ["GPT2LMHeadModel"]}),
                     ["config.json", "GPT2LMHeadModel", "LlamaForCausalLM"]),
    "dynamic_rope": (lambda c: json.dumps({**{k: v for k, v in c.items() if k not in ("rope_parameters", "rope_scaling")},
                                           "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
                     ["config.json", "dynamic"]),
    "gelu": (lambda c: json.dumps({**c, "hidden_act": "gelu"}), ["config.json", "hidden_act"]),
    "heads_not_divisible": (lambda c: json.dumps({**c, "num_key_value_heads": 3}), ["config.json", "num_key_value_heads"]),
    "missing_hidden": (lambda c: json.dumps({k: v for k, v in c.items() if k != "hidden_size"}),
                       ["config.json", "hidden_size"]),
    "string_layers": (lambda c: json.dumps({**c, "num_hidden_layers": "two"}), ["config.json", "num_hidden_layers"]),
    "unknown_mixer": (lambda c: json.dumps({**c, "hybrid": {"format": "hylo-hybrid", "version": 1, "layers": [
        {"mixer": "rwkv", "intermediate_size": 48}]}}), ["config.json", "rwkv"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_broken_config(good_dir, tmp_path, case):
    d = copy_dir(good_dir, tmp_path / case)
    make, needles = CONFIG_CASES[case]
    (d / "config.json").write_text(make(json.loads((good_dir / "config.json").read_text())))
    assert_clean_error(run("inspect", d), *needles)
    assert_clean_error(run("logits", d, "--ids", "1 2", "--out", tmp_path / "l.safetensors"), *needles)


def header_of(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def with_header(header, data, pad=True):
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def first_tensor(header):
    return sorted(k for k in header if k != "__metadata__")[0]


def mutate(header, data, case):
    name = first_tensor(header)
    if case == "truncated":
        return with_header(header, data)[:-7], ["past the end"]
    if case == "huge_header_length":
        return struct.pack("<Q", 1 << 63) + b"{}", ["header"]
    if case == "header_past_end":
        return struct.pack("<Q", 4096) + b"{}", ["header"]
    if case == "bad_json":
        return struct.pack("<Q", 8) + b"{\"a\":[1 ", ["JSON"]
    if case == "unknown_dtype":
        header[name]["dtype"] = "F12"
        return with_header(header, data), [name, "F12"]
    if case == "shape_vs_span":
        header[name]["shape"] = [s + 1 for s in header[name]["shape"]]
        return with_header(header, data), [name]
    if case == "overlap":
        other = sorted(k for k in header if k != "__metadata__")[1]
        header[other]["data_offsets"] = header[name]["data_offsets"]
        if header[other]["shape"] != header[name]["shape"] or header[other]["dtype"] != header[name]["dtype"]:
            header[other]["shape"], header[other]["dtype"] = header[name]["shape"], header[name]["dtype"]
        return with_header(header, data), ["overlap"]
    if case == "negative_shape":
        header[name]["shape"] = [-1] + header[name]["shape"][1:]
        return with_header(header, data), [name]
    if case == "duplicate_name":
        h = json.dumps(header)
        key = json.dumps(name)
        entry = key + ": " + json.dumps(header[name])
        h = "{" + entry + ", " + h[1:]
        hb = h.encode() + b" " * (-len(h.encode()) % 8)
        return struct.pack("<Q", len(hb)) + hb + data, [name]
    raise AssertionError(case)


ST_CASES = ["truncated", "huge_header_length", "header_past_end", "bad_json", "unknown_dtype", "shape_vs_span",
            "overlap", "negative_shape", "duplicate_name"]


@pytest.mark.parametrize("case", ST_CASES)
def test_broken_safetensors(good_dir, tmp_path, case):
    d = copy_dir(good_dir, tmp_path / case)
    header, data = header_of(good_dir / "model.safetensors")
    blob, needles = mutate(header, data, case)
    (d / "model.safetensors").write_bytes(blob)
    assert_clean_error(run("inspect", d), "model.safetensors", *needles)
    assert_clean_error(run("logits", d, "--ids", "1 2", "--out", tmp_path / "l.safetensors"), "model.safetensors", *needles)


def test_model_level_errors(good_dir, tmp_path):
    """Valid files that do not make this model: a missing tensor, a wrong shape, an unexpected tensor."""
    from safetensors.numpy import load_file, save_file
    import numpy as np

    tensors = load_file(good_dir / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    for case, change, needles in [
        ("missing", lambda t: t.pop(name), [name, "missing"]),
        ("shape", lambda t: t.__setitem__(name, np.zeros((3, 3), np.float32)), [name, "shape"]),
        ("unexpected", lambda t: t.__setitem__("model.layers.9.extra.weight", np.zeros(2, np.float32)),
         ["model.layers.9.extra.weight", "unexpected"]),
    ]:
        d = copy_dir(good_dir, tmp_path / case)
        t = dict(tensors)
        change(t)
        save_file(t, d / "model.safetensors")
        assert_clean_error(run("logits", d, "--ids", "1 2", "--out", tmp_path / "l.safetensors"), *needles)


def test_out_of_vocabulary_ids(good_dir, tmp_path):
    assert_clean_error(run("logits", good_dir, "--ids", "1 64", "--out", tmp_path / "l.safetensors"), "64", "vocabulary")
