"""Writes the committed seed corpora for the libFuzzer targets (tests/data/fuzz/<target>/): a few tiny valid
files each, so fuzzing starts from the real structure. Re-run after format changes:
    $HYLO_VENV/bin/python tests/data/fuzz/make_seeds.py
"""
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

here = Path(__file__).parent
rng = np.random.default_rng(0)

st = here / "fuzz_safetensors"
st.mkdir(exist_ok=True)
save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(st / "one_f32.safetensors"))
save_file({"w": np.ones((2, 2), dtype=np.float16), "b": np.array([1, 2], dtype=np.int64),
           "m": np.array([True, False]), "e": np.zeros((0, 3), dtype=np.uint8)},
          str(st / "mixed.safetensors"), metadata={"format": "pt"})
save_file({}, str(st / "empty.safetensors"))

gd = here / "fuzz_gguf"
gd.mkdir(exist_ok=True)


def write_gguf(path, arch, tensors, extra=None):
    w = gguf.GGUFWriter(str(path), arch)
    for k, v in (extra or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, list):
            w.add_array(k, v)
        else:
            w.add_uint32(k, v)
    for name, arr, qtype in tensors:
        if qtype is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


x = rng.standard_normal((2, 32)).astype(np.float32)
write_gguf(gd / "types.gguf", "llama", [
    ("f32", x[:, :4].copy(), None),
    ("f16", x[:, :4].astype(np.float16), None),
    ("q8_0", gguf.quants.quantize(x, Q.Q8_0), Q.Q8_0),
    ("q4_0", gguf.quants.quantize(x, Q.Q4_0), Q.Q4_0),
    ("q4_1", gguf.quants.quantize(x, Q.Q4_1), Q.Q4_1),
    ("q5_1", gguf.quants.quantize(x, Q.Q5_1), Q.Q5_1),
], {"general.name": "seed", "test.list": [1, 2, 3], "test.strs": ["a", "b"]})
write_gguf(gd / "kquants.gguf", "llama", [
    ("q4_k", rng.integers(0, 256, (1, 144), dtype=np.uint8), Q.Q4_K),
    ("q6_k", rng.integers(0, 256, (1, 210), dtype=np.uint8), Q.Q6_K),
])
# A whole (tiny) llama model, so the config import and the q/k un-permutation are reached.
h, heads, kv, hd, ff = 8, 2, 1, 4, 16
t = [("token_embd.weight", rng.standard_normal((5, h)).astype(np.float32), None),
     ("output_norm.weight", np.ones(h, dtype=np.float32), None)]
for name, shape in [("attn_q", (heads * hd, h)), ("attn_k", (kv * hd, h)), ("attn_v", (kv * hd, h)),
                    ("attn_output", (h, heads * hd)), ("ffn_gate", (ff, h)), ("ffn_up", (ff, h)),
                    ("ffn_down", (h, ff)), ("attn_norm", (h,)), ("ffn_norm", (h,))]:
    t.append((f"blk.0.{name}.weight", rng.standard_normal(shape).astype(np.float32), None))
write_gguf(gd / "tiny_llama.gguf", "llama", t, {
    "llama.block_count": 1, "llama.embedding_length": h, "llama.feed_forward_length": ff,
    "llama.attention.head_count": heads, "llama.attention.head_count_kv": kv,
    "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.context_length": 64,
    "llama.rope.freq_base": 10000.0, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})
for p in sorted(here.glob("fuzz_*/*")):
    print(p.relative_to(here), p.stat().st_size)
