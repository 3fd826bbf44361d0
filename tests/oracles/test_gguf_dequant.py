"""GGUF dequantization and HF layout: `hylo gguf-dump` against the PyPI `gguf` package and transformers.

(a) every tensor of the SmolLM2 teacher GGUF equals gguf.GGUFReader + gguf.quants.dequantize bit for bit;
(b) small GGUF files written with gguf.GGUFWriter, holding every type hylo dequantizes (quantized with
    gguf.quants where it can quantize, otherwise random valid blocks as raw bytes), compare bit for bit too;
(c) `--hf-names` equals the state dict transformers' GGUF loader (load_gguf_checkpoint) produces, including
    the q/k un-permutation of llama.cpp's rotary layout.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import load_file

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
TEACHER = os.environ.get("HYLO_TEACHER_GGUF", "")


def dump(src, out, *extra):
    r = subprocess.run([HYLO, "gguf-dump", str(src), "--out", str(out), *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def bits(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.view(np.uint32)


def reference(reader_tensor):
    """What the gguf package gives for one tensor, in row-major (HF) shape."""
    t = reader_tensor
    if t.tensor_type == Q.Q8_K:  # gguf has no Q8_K dequantizer: d (f32) * q (int8), ggml's dequantize_row_q8_K
        blocks = np.asarray(t.data).reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(tuple(int(x) for x in reversed(t.shape)))
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)


def compare_all(gguf_path, dumped_path, reader=None):
    reader = reader or gguf.GGUFReader(str(gguf_path))
    ours = load_file(str(dumped_path))
    assert set(ours) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        ref = reference(t)
        got = ours[t.name]
        assert got.dtype == np.float32
        assert list(got.shape) == [int(x) for x in reversed(t.shape)], t.name
        assert ref.shape == got.shape, t.name
        mismatch = np.count_nonzero(bits(ref) != bits(got))
        assert mismatch == 0, f"{t.name} ({t.tensor_type.name}): {mismatch} of {got.size} values differ"
    return len(reader.tensors)


@pytest.fixture(scope="module")
def teacher_reader():
    if not TEACHER or not Path(TEACHER).exists():
        pytest.skip("HYLO_TEACHER_GGUF not present")
    return gguf.GGUFReader(TEACHER)  # parsing the 49k-token vocabulary takes seconds: once per module


@pytest.fixture(scope="module")
def teacher_dumps(tmp_path_factory):
    if not TEACHER or not Path(TEACHER).exists():
        pytest.skip("HYLO_TEACHER_GGUF not present")
    d = tmp_path_factory.mktemp("teacher")
    dump(TEACHER, d / "gguf_names.safetensors")
    dump(TEACHER, d / "hf_names.safetensors", "--hf-names")
    return d


def test_teacher_every_tensor_bit_exact(teacher_dumps, teacher_reader):
    n = compare_all(TEACHER, teacher_dumps / "gguf_names.safetensors", teacher_reader)
    assert n == 272
    types = {t.tensor_type for t in teacher_reader.tensors}
    assert {Q.Q4_1, Q.Q8_0, Q.F32} <= types


def test_teacher_metadata_json(teacher_reader):
    r = subprocess.run([HYLO, "gguf-dump", TEACHER, "--metadata"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    md = json.loads(r.stdout)
    for key, field in teacher_reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, list) and len(value) > 16:
            assert md[key]["length"] == len(value)
            assert md[key]["first"] == value[:16]
        elif isinstance(value, float):
            assert md[key] == pytest.approx(value, rel=0, abs=0), key
        else:
            assert md[key] == value, key


# ---- (b) every supported type from GGUFWriter -------------------------------------------------------------

BLOCK = {t: gguf.constants.GGML_QUANT_SIZES[t] for t in Q}
# byte offsets of the f16 scale fields that must be finite in a random block; Q8_K's d is f32
F16_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
              Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}


def random_blocks(rng, qtype, shape):
    """Random bytes shaped as ggml blocks for a row-major `shape`, with finite scales."""
    block, size = BLOCK[qtype]
    n_blocks = int(np.prod(shape)) // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS.get(qtype, []):
        raw[:, off:off + 2] = rng.uniform(-2, 2, n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    if qtype == Q.Q8_K:
        raw[:, 0:4] = rng.uniform(-2, 2, n_blocks).astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    return raw.reshape(*shape[:-1], shape[-1] // block * size)


def test_every_type_from_gguf_writer(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "types.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_array("test.nested_strings", ["a", "bb", ""])
    count = 0
    # Float types, with inf/nan/subnormals included.
    x = rng.standard_normal((3, 40)).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, 1e-40, -0.0]
    w.add_tensor("f32", x)
    w.add_tensor("f16", x.astype(np.float16))
    w.add_tensor("bf16", gguf.quants.quantize(x, Q.BF16), raw_dtype=Q.BF16)
    count += 3
    # Types gguf can quantize: real data, several ranks, a row with all-equal values (zero scale).
    for qtype in [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0]:
        for shape in [(5, 64), (2, 3, 32), (2, 2, 2, 96)]:
            data = rng.standard_normal(shape).astype(np.float32) * 3
            data.reshape(-1, shape[-1])[0] = 0.25
            w.add_tensor(f"{qtype.name}_{'x'.join(map(str, shape))}", gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            count += 1
    # Every block type as random valid blocks (covers all quant codes and scale bits).
    for qtype in [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K]:
        block = BLOCK[qtype][0]
        for shape in [(3, 2 * block), (2, 2, block)]:
            w.add_tensor(f"rand_{qtype.name}_{len(shape)}d", random_blocks(rng, qtype, shape), raw_dtype=qtype)
            count += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    out = tmp_path / "types.safetensors"
    dump(path, out)
    assert compare_all(path, out) == count


# ---- (c) HF layout against transformers' GGUF loader ------------------------------------------------------

def test_hf_names_match_transformers_loader(teacher_dumps, teacher_reader):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = Path(TEACHER)
    f = {k: v.contents() for k, v in teacher_reader.fields.items() if k.startswith("llama.")}
    assert teacher_reader.fields["general.architecture"].contents() == "llama"
    # The model is only used by the loader to name tensors and by the processor for the head counts.
    config = LlamaConfig(num_hidden_layers=f["llama.block_count"], hidden_size=f["llama.embedding_length"],
                         intermediate_size=f["llama.feed_forward_length"],
                         num_attention_heads=f["llama.attention.head_count"],
                         num_key_value_heads=f["llama.attention.head_count_kv"],
                         vocab_size=f["llama.vocab_size"], tie_word_embeddings=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    ref = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    ours = load_file(str(teacher_dumps / "hf_names.safetensors"))
    assert set(ours) == set(ref)
    permuted = 0
    for name, t in ref.items():
        r = t.numpy()
        assert ours[name].shape == r.shape, name
        assert np.array_equal(bits(ours[name]), bits(r)), name
        if ".q_proj." in name or ".k_proj." in name:
            permuted += 1
    assert permuted == 2 * config.num_hidden_layers
    # The un-permutation is not the identity: the GGUF-named dump differs from the HF-named one for q/k.
    raw = load_file(str(teacher_dumps / "gguf_names.safetensors"))
    assert not np.array_equal(raw["blk.0.attn_q.weight"], ours["model.layers.0.self_attn.q_proj.weight"])
    assert np.array_equal(raw["blk.0.attn_v.weight"], ours["model.layers.0.self_attn.v_proj.weight"])
