"""`hylo inspect` and `hylo generate` against transformers (the oracle) and the real SmolLM2 teacher.

inspect: on tiny HF checkpoints made here with transformers, the parameter count equals the sum of numel of
transformers' parameters (and the checkpoint's tensors), the KV cache per token equals
layers * 2 * kv_heads * head_dim * 2 bytes (bf16), and scales linearly with --context; on the teacher GGUF the
count equals the tensor elements the `gguf` package reads.

generate: --greedy --print-ids equals transformers' `generate(do_sample=False)` for 32 tokens on tiny Llama,
Qwen2 and Qwen3 checkpoints (with and without a repetition penalty, and from a text prompt through a tiny
byte-level BPE tokenizer trained here); seeded sampling is reproducible and depends on the seed; stop strings
cut the text right before their first occurrence; the teacher answers a chat question with "Paris".
"""
import json
import os
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_checkpoints import seeded_wide_model
from tokenizer_oracles import train_byte_level_bpe

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
TEACHER = os.environ.get("HYLO_TEACHER_GGUF", str(Path.home() / ".cache/hylo/models/SmolLM2-135M-Instruct.Q4_1.gguf"))

TOKENIZER_VOCAB = 320
CORPUS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair. Call me Ishmael. Some "
    "years ago - never mind how long precisely - having little or no money in my purse, and nothing particular "
    "to interest me on shore, I thought I would sail about a little and see the watery part of the world. "
) * 4


def run(*args, check=True):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def ids_of(stdout):
    return [int(x) for x in stdout.split()]


@pytest.fixture(scope="module")
def tokenizer_json():
    return train_byte_level_bpe(CORPUS, TOKENIZER_VOCAB).to_str()


# name, family, config overrides (vocab = the tokenizer's, so every generated id decodes to text)
CASES = [
    ("llama_gqa2_untied", "llama", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)),
    ("qwen2_mqa_tied", "qwen2", dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=1,
                                     tie_word_embeddings=True)),
    ("qwen3_gqa4_headdim", "qwen3", dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=24,
                                         tie_word_embeddings=False)),
]

_built = {}


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return tmp_path_factory.mktemp("inspect_generate")


def build(case, tmp_root, tokenizer_json):
    name, family, overrides = case
    if name in _built:
        return _built[name]
    import transformers

    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
           "qwen3": transformers.Qwen3Config}[family]
    kw = dict(vocab_size=TOKENIZER_VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=None)
    kw.update(overrides)
    cfg = cls(**kw)
    model = seeded_wide_model(cfg, name)
    out = tmp_root / name
    model.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    _built[name] = (model, out)
    return _built[name]


def hf_greedy(model, prompt, n, **kw):
    model.generation_config.eos_token_id = None  # exactly n tokens, like --ignore-eos
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, pad_token_id=0, **kw)
    return out[0, len(prompt):].tolist()


# ---- inspect -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_inspect_counts_parameters_and_kv_bytes(case, tmp_root, tokenizer_json):
    model, path = build(case, tmp_root, tokenizer_json)
    c = model.config
    info = json.loads(run("inspect", path, "--json", "--context", 1000).stdout)
    assert info["architecture"] == c.architectures[0]
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["parameters_from_tensors"] == info["parameters"] and info["parameters_match"] is True
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = c.num_hidden_layers * 2 * c.num_key_value_heads * head_dim * 2
    assert info["kv_bytes_per_token"] == kv
    assert info["context"] == 1000 and info["kv_bytes_at_context"] == 1000 * kv
    assert info["state_bytes_per_sequence"] == 0
    assert len(info["layers"]) == c.num_hidden_layers
    for i, layer in enumerate(info["layers"]):
        assert layer["index"] == i and layer["mixer"] == "gqa"
        assert layer["kv_bytes_per_token"] == 2 * c.num_key_value_heads * head_dim * 2
        prefix = f"model.layers.{i}."
        assert layer["params"] == sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
    text = run("inspect", path).stdout
    assert c.architectures[0] in text and str(info["parameters"]) in text and "(match)" in text


def test_inspect_teacher_gguf():
    if not Path(TEACHER).is_file():
        pytest.fail(f"teacher GGUF {TEACHER} missing: run `make setup` (scripts/setup.sh) to fetch it")
    import gguf

    reader = gguf.GGUFReader(TEACHER)
    info = json.loads(run("inspect", TEACHER, "--json").stdout)
    assert info["parameters"] == sum(int(np.prod(t.shape)) for t in reader.tensors)
    assert info["parameters_match"] is True
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    layers = int(reader.fields[f"{arch}.block_count"].parts[-1][0])
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].parts[-1][0])
    heads = int(reader.fields[f"{arch}.attention.head_count"].parts[-1][0])
    hidden = int(reader.fields[f"{arch}.embedding_length"].parts[-1][0])
    assert info["kv_bytes_per_token"] == layers * 2 * kv_heads * (hidden // heads) * 2


def test_inspect_rejects_non_models(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    r = run("inspect", tmp_path / "notes.txt", check=False)
    assert r.returncode != 0 and "notes.txt" in r.stderr
    r = run("inspect", tmp_path, check=False)
    assert r.returncode != 0 and "config.json" in r.stderr


# ---- generate ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_greedy_equals_transformers_generate(case, tmp_root, tokenizer_json):
    model, path = build(case, tmp_root, tokenizer_json)
    prompt = np.random.default_rng(zlib.crc32(case[0].encode())).integers(2, TOKENIZER_VOCAB, size=12).tolist()
    want = hf_greedy(model, prompt, 32)
    got = ids_of(run("generate", path, "--prompt-ids", " ".join(map(str, prompt)), "--max-new-tokens", 32,
                     "--greedy", "--print-ids", "--ignore-eos").stdout)
    assert got == want
    # HF's repetition penalty applies in greedy search too.
    want = hf_greedy(model, prompt, 32, repetition_penalty=1.5)
    got = ids_of(run("generate", path, "--prompt-ids", " ".join(map(str, prompt)), "--max-new-tokens", 32,
                     "--greedy", "--repetition-penalty", 1.5, "--print-ids", "--ignore-eos").stdout)
    assert got == want


def test_text_prompt_goes_through_the_tokenizer(tmp_root, tokenizer_json):
    from tokenizers import Tokenizer

    model, path = build(CASES[0], tmp_root, tokenizer_json)
    prompt_text = "It was the season of hope, and"
    prompt = Tokenizer.from_str(tokenizer_json).encode(prompt_text).ids
    assert prompt[0] == 0  # BOS from the post-processor
    want = hf_greedy(model, prompt, 32)
    got = ids_of(run("generate", path, "--prompt", prompt_text, "--max-new-tokens", 32, "--greedy", "--print-ids",
                     "--ignore-eos").stdout)
    assert got == want
    # The printed text is the tokenizer's decoding of those ids (streamed and non-streamed alike).
    text = Tokenizer.from_str(tokenizer_json).decode(want, skip_special_tokens=True)
    for extra in ([], ["--no-stream"]):
        out = run("generate", path, "--prompt", prompt_text, "--max-new-tokens", 32, "--greedy", "--ignore-eos",
                  *extra)
        assert out.stdout == text + "\n"
        assert "prefill" in out.stderr and "tok/s" in out.stderr


def test_seeded_sampling_is_reproducible(tmp_root, tokenizer_json):
    _, path = build(CASES[1], tmp_root, tokenizer_json)
    args = ["generate", path, "--prompt-ids", "0 5 9 33", "--max-new-tokens", 40, "--temperature", 1.2,
            "--top-k", 50, "--top-p", 0.95, "--min-p", 0.01, "--print-ids", "--ignore-eos"]
    a = ids_of(run(*args, "--seed", 11).stdout)
    assert len(a) == 40
    assert ids_of(run(*args, "--seed", 11).stdout) == a
    assert ids_of(run(*args, "--seed", 12).stdout) != a
    greedy = ids_of(run("generate", path, "--prompt-ids", "0 5 9 33", "--max-new-tokens", 40, "--greedy",
                        "--print-ids", "--ignore-eos").stdout)
    assert greedy != a  # temperature 1.2 over a wide distribution does not collapse to argmax


def test_stop_strings_cut_before_their_first_occurrence(tmp_root, tokenizer_json):
    _, path = build(CASES[2], tmp_root, tokenizer_json)
    base = ["generate", path, "--prompt", "Call me", "--max-new-tokens", 40, "--greedy", "--ignore-eos"]
    full = run(*base).stdout[:-1]  # the command ends its text with one newline
    assert len(full) > 20, full
    # A stop string from the middle of the text; its first occurrence decides where the output ends.
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = full.index(stop)
    r = run(*base, "--stop", stop)
    assert r.stdout == full[:cut] + "\n"
    assert "stop: stop_string" in r.stderr
    # Of several stop strings the earliest occurrence wins; one that never occurs changes nothing.
    r = run(*base, "--stop", "\x01never\x01", "--stop", full[cut + 1: cut + 4])
    assert r.stdout == full[:full.index(full[cut + 1: cut + 4])] + "\n"
    assert run(*base, "--stop", "\x01never\x01").stdout == full + "\n"


def test_generate_rejects_bad_arguments(tmp_root, tokenizer_json):
    _, path = build(CASES[0], tmp_root, tokenizer_json)
    for args, needle in [
        (["--prompt-ids", "1 2", "--top-p", 0], "top_p"),
        (["--prompt-ids", "1 2", "--temperature", -1], "temperature"),
        (["--prompt-ids", "1 x"], "--prompt-ids: 'x' is not a non-negative integer id"),
        (["--prompt-ids", "1,2,-3"], "--prompt-ids: '-3' is not a non-negative integer id"),
        (["--prompt-ids", " , "], "--prompt-ids: no ids given"),
        (["--prompt-ids", f"1 {TOKENIZER_VOCAB}"], "vocabulary"),
        (["--prompt", "a", "--prompt-ids", "1"], "exactly one"),
        ([], "exactly one"),
        (["--prompt", "a", "--chat"], "chat template"),  # the tiny tokenizer has none
    ]:
        r = run("generate", path, *args, check=False)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)


def test_logits_ids_share_the_generate_format(tmp_root, tokenizer_json, tmp_path):
    """`logits --ids` and `generate --prompt-ids` parse ids alike (apps/hylo/args.h): spaces and commas mix, and
    errors name the option."""
    _, path = build(CASES[0], tmp_root, tokenizer_json)
    from safetensors.numpy import load_file
    run("logits", path, "--ids", "3 5 7", "--ids", "3,5, 7", "--out", tmp_path / "l.safetensors")
    l = load_file(str(tmp_path / "l.safetensors"))
    np.testing.assert_array_equal(l["logits.0"], l["logits.1"])
    for ids, needle in [("1 x", "--ids: 'x' is not a non-negative integer id"), (",", "--ids: no ids given")]:
        r = run("logits", path, "--ids", ids, "--out", tmp_path / "bad.safetensors", check=False)
        assert r.returncode != 0 and needle in r.stderr, (ids, r.stderr)


def test_gguf_dump_refuses_options_that_do_nothing(tmp_path):
    if not Path(TEACHER).is_file():
        pytest.skip("teacher GGUF not available")
    for args, needle in [([], "nothing to do"), (["--hf-names"], "--hf-names"),
                         (["--hf-names", "--metadata"], "--hf-names")]:
        r = run("gguf-dump", TEACHER, *args, check=False)
        assert r.returncode == 1 and needle in r.stderr, (args, r.stderr)
        assert r.stdout == "", args  # refused before printing any metadata


def test_teacher_answers_capital_of_france():
    if not Path(TEACHER).is_file():
        pytest.fail(f"teacher GGUF {TEACHER} missing: run `make setup` (scripts/setup.sh) to fetch it")
    r = run("generate", TEACHER, "--chat", "--prompt", "What is the capital of France?", "--greedy",
            "--max-new-tokens", 20)
    print(r.stdout, r.stderr)
    assert "Paris" in r.stdout
    assert "decode" in r.stderr and "tok/s" in r.stderr
