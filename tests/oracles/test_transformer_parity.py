"""The Transformer teacher in hylo against Hugging Face transformers (the oracle).

Tiny randomly initialised checkpoints of Llama, Qwen2, Qwen3 and Mistral are created here with transformers
(save_pretrained, safetensors) in shapes that exercise every path of the model: GQA ratios 1, 3, 4 and MQA,
head_dim != hidden/heads, tied and untied heads, odd vocabularies, llama3 / linear / yarn RoPE, q/k/v(/o)
biases, MLP bias, Qwen3 q/k norms, sliding windows, and both config spellings of RoPE (transformers 5.x
`rope_parameters` and 4.x `rope_theta` + `rope_scaling`). For each:

  * logits: `hylo logits` (fp32, CPU) vs transformers fp32 eager on a 64-token prompt, relative RMS <= 1e-5
    (the acceptance bound); alongside, both are measured against transformers in fp64, and hylo's error must
    be within a small multiple of what transformers' own fp32 computation gets (a derived bound);
  * perplexity: `hylo perplexity --json --per-token` vs NLLs computed from transformers' logits over the same
    non-overlapping windows (every token but each window's first is predicted), 1e-5 relative, using a tiny
    byte-level BPE tokenizer trained here with `tokenizers` and saved as tokenizer.json in the checkpoint;
  * greedy: 32 tokens from `hylo generate --greedy` (KV-cached decode) equal argmax decoding with
    transformers (full recompute each step).

GGUF: the SmolLM2 teacher ($HYLO_TEACHER_GGUF): hylo's next-token distributions equal transformers running
the same dequantized weights (from_pretrained(gguf_file=...), fp32), softmax relative RMS <= 1e-4.
"""
import json
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
DATA = Path(os.environ.get("HYLO_DATA", Path.home() / ".cache/hylo/data"))
TEACHER = os.environ.get("HYLO_TEACHER_GGUF", "")

TOKENIZER_VOCAB = 300  # byte-level BPE: 256 bytes + 2 specials + merges; every model vocab below is >= this
CONTEXT = 100          # perplexity window (tokens)


def rel_rms(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(*args):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r.stdout


# name, family, config overrides. Defaults: hidden 64, 2 layers, intermediate 96, max positions 256.
CASES = [
    # GQA ratio 4, untied, odd vocab, llama3 RoPE written in the 4.x spelling (rope_theta + rope_scaling).
    ("llama_gqa4_llama3_legacy", "llama", dict(
        vocab_size=311, num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=32)), "legacy_rope"),
    # MHA (ratio 1), tied, attention bias on q/k/v/o and MLP bias, linear RoPE.
    ("llama_mha_tied_bias_linear", "llama", dict(
        vocab_size=307, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
        attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0)), None),
    # MQA with head_dim (24) != hidden/heads (16).
    ("llama_mqa_headdim", "llama", dict(
        vocab_size=301, num_attention_heads=4, num_key_value_heads=1, head_dim=24, tie_word_embeddings=False), None),
    # GQA ratio 3 with Qwen2's q/k/v bias, tied, sliding window on the second layer only.
    ("qwen2_gqa3_tied_sliding", "qwen2", dict(
        vocab_size=313, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
        use_sliding_window=True, sliding_window=12, max_window_layers=1), None),
    # Qwen3: q/k norm, explicit head_dim != hidden/heads, attention bias, yarn RoPE.
    ("qwen3_gqa4_yarn_bias", "qwen3", dict(
        vocab_size=317, hidden_size=96, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
        attention_bias=True, tie_word_embeddings=False, max_position_embeddings=128,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=32)),
     None),
    # Qwen3 MHA, tied, vocab equal to the tokenizer's.
    ("qwen3_mha_tied", "qwen3", dict(
        vocab_size=300, num_attention_heads=4, num_key_value_heads=4, head_dim=16, tie_word_embeddings=True), None),
    # Mistral with a sliding window shorter than the prompt.
    ("mistral_gqa2_window", "mistral", dict(
        vocab_size=303, num_attention_heads=4, num_key_value_heads=2, sliding_window=16,
        tie_word_embeddings=False), None),
]


@pytest.fixture(scope="module")
def corpus():
    text = (DATA / "text" / "moby-dick.txt").read_text(encoding="utf-8")
    return text[20000:60000], text[100000:101200]


@pytest.fixture(scope="module")
def tokenizer_json(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=["<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus[0]], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    assert tok.token_to_id("<bos>") == 0 and tok.token_to_id("<eos>") == 1
    return tok.to_str()


def make_config(family, overrides):
    import transformers

    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "qwen3": transformers.Qwen3Config, "mistral": transformers.MistralConfig}[family]
    kw = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=None)
    kw.update(overrides)
    cfg = cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


_built = {}


def build(case, tmp_root, tokenizer_json):
    """Creates (once per session) the HF model and its checkpoint directory."""
    name, family, overrides, variant = case
    if name in _built:
        return _built[name]
    import transformers

    cfg = make_config(family, overrides)
    torch.manual_seed(zlib.crc32(name.encode()))
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    with torch.no_grad():
        # Larger than transformers' init (std 0.02) so logits and attention patterns are far from uniform,
        # and norm weights away from 1 so a misplaced norm weight shows.
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    out = tmp_root / name
    model.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    if variant == "legacy_rope":
        cj = json.loads((out / "config.json").read_text())
        rp = cj.pop("rope_parameters")
        cj["rope_theta"] = rp.pop("rope_theta")
        cj["rope_scaling"] = rp
        (out / "config.json").write_text(json.dumps(cj))
    _built[name] = (model, out)
    return _built[name]


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return tmp_path_factory.mktemp("parity")


def hf_logits(model, ids, dtype=torch.float32):
    m = model if dtype == torch.float32 else model.to(dtype)
    with torch.no_grad():
        out = m(torch.tensor([ids]), use_cache=False).logits[0].to(torch.float64).numpy()
    if dtype != torch.float32:
        model.to(torch.float32)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_logits(case, tmp_root, tokenizer_json):
    model, path = build(case, tmp_root, tokenizer_json)
    vocab = model.config.vocab_size
    ids = np.random.default_rng(1).integers(0, vocab, size=64).tolist()
    out = tmp_root / f"{case[0]}.logits.safetensors"
    run("logits", path, "--ids", " ".join(map(str, ids)), "--out", out)
    ours = load_file(str(out))["logits"]
    assert ours.dtype == np.float32 and ours.shape == (64, vocab)
    ref32 = hf_logits(model, ids)
    ref64 = hf_logits(model, ids, torch.float64)
    err = rel_rms(ours, ref32)
    err64_ours, err64_hf = rel_rms(ours, ref64), rel_rms(ref32, ref64)
    print(f"{case[0]}: rel RMS vs transformers fp32 {err:.3e}; vs fp64: hylo {err64_ours:.3e}, "
          f"transformers fp32 {err64_hf:.3e}")
    assert err <= 1e-5
    # Derived: hylo's fp32 math may be at most a few times less accurate than transformers' own fp32 math
    # (floor: a few fp32 ulps relative, for cases where transformers happens to be almost exact).
    assert err64_ours <= 4 * err64_hf + 4 * np.finfo(np.float32).eps


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_perplexity(case, tmp_root, tokenizer_json, corpus):
    from tokenizers import Tokenizer

    model, path = build(case, tmp_root, tokenizer_json)
    text = corpus[1]
    textfile = tmp_root / "ppl.txt"
    textfile.write_text(text, encoding="utf-8")
    ids = Tokenizer.from_str(tokenizer_json).encode(text).ids
    assert ids[0] == 0  # BOS, as the post-processor adds it
    got = json.loads(run("perplexity", path, textfile, "--context", CONTEXT, "--json", "--per-token"))
    assert got["tokens"] == len(ids)
    ref = []
    for start in range(0, len(ids), CONTEXT):
        window = ids[start:start + CONTEXT]
        if len(window) < 2:
            continue
        logits = torch.tensor(hf_logits(model, window))                 # [L, V] fp64 of fp32 logits
        logp = torch.log_softmax(logits, dim=-1)
        ref.extend((-logp[torch.arange(len(window) - 1), torch.tensor(window[1:])]).tolist())
    ref = np.array(ref)
    nll = np.array(got["nll"])
    assert nll.shape == ref.shape and got["predicted"] == len(ref)
    err = rel_rms(nll, ref)
    mean_err = abs(got["nll_mean"] - ref.mean()) / ref.mean()
    print(f"{case[0]}: {len(ref)} predictions, per-token NLL rel RMS {err:.3e}, nll_mean rel {mean_err:.3e}")
    assert err <= 1e-5 and mean_err <= 1e-5
    assert abs(got["perplexity"] - np.exp(ref.mean())) <= 1e-5 * np.exp(ref.mean())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_greedy(case, tmp_root, tokenizer_json):
    model, path = build(case, tmp_root, tokenizer_json)
    prompt = np.random.default_rng(2).integers(2, model.config.vocab_size, size=16).tolist()
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(32):
            ids.append(int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    want = ids[len(prompt):]
    out = run("generate", path, "--prompt-ids", " ".join(map(str, prompt)), "--max-new-tokens", 32, "--greedy",
              "--print-ids", "--ignore-eos")
    got = [int(x) for x in out.replace(",", " ").split()]
    assert got == want


def test_smollm2_gguf_next_token_distribution(tmp_path):
    if not TEACHER or not Path(TEACHER).is_file():
        pytest.skip("HYLO_TEACHER_GGUF not present (run the set-up step to fetch it)")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # transformers' own GGUF loader dequantizes (and un-permutes q/k); the weights go into an fp32 eager model.
    # (from_pretrained(gguf_file=...) does the same but needs `accelerate`, which the venv does not carry.)
    teacher = Path(TEACHER)
    config = AutoConfig.from_pretrained(str(teacher.parent), gguf_file=teacher.name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    state = load_gguf_checkpoint(str(teacher), return_tensors=True, model_to_load=skeleton)["tensors"]
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    result = model.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()},
                                   strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"lm_head.weight"} and config.tie_word_embeddings
    model.tie_weights()
    # Fixed prompts, as transformers' GGUF tokenizer encodes them: "The capital of France is",
    # "def fibonacci(n):\n    ", and the ChatML user turn "What is 2+2?" with the assistant prompt.
    # Every position is compared, i.e. the next-token distribution after every prefix.
    prompts = [[504, 3575, 282, 4649, 314],
               [1604, 3987, 46477, 24, 94, 727, 2367],
               [1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198]]
    out = tmp_path / "gguf.safetensors"
    args = [x for p in prompts for x in ("--ids", " ".join(map(str, p)))]
    run("logits", teacher, *args, "--out", out)  # one load, one forward per prompt
    got = load_file(str(out))
    for i, prompt in enumerate(prompts):
        ours = torch.softmax(torch.from_numpy(got[f"logits.{i}"]).double(), -1).numpy()
        with torch.no_grad():
            ref = torch.softmax(model(torch.tensor([prompt]), use_cache=False).logits[0].double(), -1).numpy()
        err = rel_rms(ours, ref)
        print(f"SmolLM2 GGUF prompt {i}: softmax rel RMS {err:.3e}")
        assert err <= 1e-4


BF16_CASES = [CASES[0], CASES[4]]


@pytest.mark.parametrize("case", BF16_CASES, ids=[c[0] for c in BF16_CASES])
def test_bf16_logits_as_accurate_as_transformers_bf16(case, tmp_root, tokenizer_json):
    """bf16 on CPU: hylo's logits are about as close to the fp64 truth as transformers' own bf16 forward."""
    model, path = build(case, tmp_root, tokenizer_json)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, size=64).tolist()
    out = tmp_root / f"{case[0]}.bf16.safetensors"
    run("logits", path, "--ids", " ".join(map(str, ids)), "--out", out, "--dtype", "bf16")
    ours = load_file(str(out))["logits"]
    ref64 = hf_logits(model, ids, torch.float64)
    hf_bf16 = hf_logits(model, ids, torch.bfloat16)
    err_ours, err_hf = rel_rms(ours, ref64), rel_rms(hf_bf16, ref64)
    print(f"{case[0]}: bf16 rel RMS vs fp64: hylo {err_ours:.3e}, transformers {err_hf:.3e}")
    # Both round the same weights to bf16 and compute in bf16 with fp32 softmax/norm statistics; the order of
    # roundings differs (hylo's reference attention runs in fp32), so allow a small multiple, not equality.
    assert err_ours <= 2 * err_hf
