"""Llama-3.x GGUFs as users hold them: transformers-made random Llama-3-style checkpoints (llama3 rope_scaling,
tied and untied embeddings, the Llama-3.2 tokenizer) converted by llama.cpp's own convert_hf_to_gguf.py (from
the llama-cpp-python sdist that scripts/setup.sh unpacks under $HYLO_CACHE/oracles/llama.cpp), which writes the
llama3 scaling as the tensor rope_freqs.weight. `hylo perplexity --per-token` on the GGUF must equal
transformers:
  * f16: the checkpoint's weights are f16-exact (rounded before saving), so the f16 GGUF holds the same numbers
    as the HF directory and the fp32 parity bound of test_transformer_parity.py (1e-5 relative) applies;
  * q8_0: against transformers running the weights its own GGUF loader dequantizes from the same file (with the
    HF directory's config, since transformers' GGUF config reader drops the llama3 scaling), same bound.
Also: factors that are not a llama3 profile are refused with an error naming the file and the tensor."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
CACHE = Path(os.environ.get("HYLO_CACHE", Path.home() / ".cache" / "hylo"))
DATA = Path(os.environ.get("HYLO_DATA", CACHE / "data"))
LLAMA_CPP = CACHE / "oracles" / "llama.cpp"
CONTEXT = 64

pytestmark = pytest.mark.skipif(not (LLAMA_CPP / "convert_hf_to_gguf.py").exists(),
                                reason="llama.cpp's converter not unpacked (run scripts/setup.sh)")


def rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_checkpoint(out: Path, tied: bool) -> Path:
    import transformers

    # head_dim 64, theta 1e4, original context 256: four of the 32 frequencies fall in llama3's interpolated band,
    # the rest are unscaled or fully scaled (factor 8), so every branch of the factors is exercised.
    cfg = transformers.LlamaConfig(
        vocab_size=128256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=tied,
        rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128009,
        rope_scaling={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 256})
    cfg.rope_theta = 10000.0
    torch.manual_seed(1 if tied else 2)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.08, 0.08) if p.dim() > 1 else p.uniform_(0.5, 1.5)
            p.copy_(p.half().float())  # f16-exact: the f16 GGUF holds the very same numbers
    model.save_pretrained(out, safe_serialization=True)
    for f in (DATA / "tokenizers" / "llama3_2").iterdir():
        shutil.copy(f, out / f.name)
    return out


def convert(hf_dir: Path, outtype: str) -> Path:
    out = hf_dir.parent / f"{hf_dir.name}.{outtype}.gguf"
    # llama.cpp's own gguf-py first (the converter and its gguf package go together).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LLAMA_CPP / "gguf-py"), *sys.path]))
    r = subprocess.run([sys.executable, str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", outtype,
                        "--outfile", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    text = (DATA / "text" / "moby-dick.txt").read_text(encoding="utf-8")[20000:21500]
    path = tmp_path_factory.mktemp("text") / "ppl.txt"
    path.write_text(text, encoding="utf-8")
    return path, text


def hylo_nll(model_path, textfile):
    r = subprocess.run([HYLO, "perplexity", str(model_path), str(textfile), "--context", str(CONTEXT), "--json",
                        "--per-token"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def reference_nll(model, ids):
    ref = []
    for start in range(0, len(ids), CONTEXT):
        window = ids[start:start + CONTEXT]
        if len(window) < 2:
            continue
        with torch.no_grad():
            logits = model(torch.tensor([window]), use_cache=False).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        ref.extend((-logp[torch.arange(len(window) - 1), torch.tensor(window[1:])]).tolist())
    return np.array(ref)


def gguf_weights_model(hf_dir: Path, gguf: Path):
    """transformers' GGUF loader dequantizes the file; the HF directory's config (llama3 RoPE) runs them."""
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.AutoConfig.from_pretrained(hf_dir)
    with torch.device("meta"):
        skeleton = transformers.AutoModelForCausalLM.from_config(config)
    state = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)["tensors"]
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    res = model.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()}, strict=False)
    assert not res.unexpected_keys, res.unexpected_keys
    assert set(res.missing_keys) <= ({"lm_head.weight"} if config.tie_word_embeddings else set()), res.missing_keys
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_llama3_gguf_perplexity_equals_transformers(tmp_path, corpus, tied):
    import gguf as gguf_py
    import transformers
    from tokenizers import Tokenizer

    hf_dir = make_checkpoint(tmp_path / ("tied" if tied else "untied"), tied)
    textfile, text = corpus
    ids = Tokenizer.from_file(str(hf_dir / "tokenizer.json")).encode(text).ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    for outtype in ("f16", "q8_0"):
        path = convert(hf_dir, outtype)
        reader = gguf_py.GGUFReader(str(path))
        names = {t.name for t in reader.tensors}
        assert "rope_freqs.weight" in names and (("output.weight" in names) != tied)
        got = hylo_nll(path, textfile)
        assert got["tokens"] == len(ids)
        ref = reference_nll(hf if outtype == "f16" else gguf_weights_model(hf_dir, path), ids)
        nll = np.array(got["nll"])
        assert nll.shape == ref.shape
        err = rel_rms(nll, ref)
        print(f"{'tied' if tied else 'untied'} {outtype}: {len(ref)} predictions, per-token NLL rel RMS {err:.3e}")
        assert err <= 1e-5
        if outtype == "f16":
            # The scaling matters: the same weights without it (plain RoPE) are far off this bound.
            plain_cfg = transformers.AutoConfig.from_pretrained(hf_dir)
            plain_cfg.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
            plain = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, config=plain_cfg, dtype=torch.float32,
                                                                      attn_implementation="eager").eval()
            assert rel_rms(reference_nll(plain, ids), ref) > 1e-3


def test_factors_that_are_not_llama3_are_refused(tmp_path):
    import gguf as gguf_py

    # A vocabulary-free GGUF written here: the llama metadata of a 1-layer model and a rope_freqs.weight whose
    # interpolated band is not the llama3 curve.
    path = tmp_path / "bad-rope.gguf"
    w = gguf_py.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(32)
    freqs = 1.0 / (10000.0 ** (np.arange(0, 64, 2) / 64))
    wavelen = 2 * np.pi / freqs
    factors = np.where(wavelen < 64, 1.0, 8.0)
    band = (wavelen >= 64) & (wavelen <= 256)
    assert band.sum() >= 3
    factors[band] = 1 + 6 * np.linspace(0.2, 0.9, band.sum()) ** 2  # 1/factor not affine in the frequency
    w.add_tensor("rope_freqs.weight", factors.astype(np.float32))
    rng = np.random.default_rng(0)
    for name, shape in [("token_embd.weight", (32, 64)), ("output_norm.weight", (64,)),
                        ("blk.0.attn_norm.weight", (64,)), ("blk.0.ffn_norm.weight", (64,)),
                        ("blk.0.attn_q.weight", (64, 64)), ("blk.0.attn_k.weight", (64, 64)),
                        ("blk.0.attn_v.weight", (64, 64)), ("blk.0.attn_output.weight", (64, 64)),
                        ("blk.0.ffn_gate.weight", (128, 64)), ("blk.0.ffn_up.weight", (128, 64)),
                        ("blk.0.ffn_down.weight", (64, 128))]:
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = subprocess.run([HYLO, "inspect", str(path)], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    assert str(path) in r.stderr and "rope_freqs.weight" in r.stderr and "not llama3 scaling" in r.stderr, r.stderr
