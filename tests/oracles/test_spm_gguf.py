"""SentencePiece-score GGUF vocabularies (tokenizer.ggml.model = "llama": Llama-2, Mistral, Gemma, Phi-3) in hylo,
against llama.cpp and Hugging Face `tokenizers`:
  * llama.cpp's own vocabulary test files (models/ggml-vocab-{llama-spm,phi-3}.gguf with .inp/.out, from the
    llama-cpp-python sdist that scripts/setup.sh unpacks under $HYLO_CACHE/oracles/llama.cpp): every input
    tokenizes to llama.cpp's expected ids (no BOS, as its test-tokenizer-0 runs them);
  * a SentencePiece BPE model trained here with `sentencepiece` (byte fallback, a user-defined and a control
    symbol, digits left out of the alphabet so that they fall back to bytes), converted to GGUF by llama.cpp's
    convert_hf_to_gguf.py --vocab-only and to tokenizer.json by transformers: ids equal `tokenizers` on the
    shared text (whole paragraphs and random slices), an adversarial set, with and without BOS, special tokens
    in the text; decode equals `tokenizers`' decode;
  * invalid UTF-8, where `tokenizers` cannot go (it only sees str): llama.cpp's rule, derived by hand: every byte
    that is not part of a valid character is a symbol of its own and becomes its <0xXX> token (a truncated
    sequence takes the bytes that follow it with it, as llama.cpp's lead-byte length does).
The tokenizer.json compared with is in the form Llama-2 publishes (normalizer Prepend("▁") + Replace(" ", "▁"),
no pre-tokenizer), which is SentencePiece's rule: transformers 5 converts to a Metaspace pre-tokenizer instead,
which skips the prefix where the text already starts with a space, unlike SentencePiece and llama.cpp."""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tokenizer_oracles import DATA, as_item, run_jsonl

CACHE = Path(os.environ.get("HYLO_CACHE", Path.home() / ".cache" / "hylo"))
LLAMA_CPP = CACHE / "oracles" / "llama.cpp"
pytestmark = pytest.mark.skipif(not (LLAMA_CPP / "convert_hf_to_gguf.py").exists(),
                                reason="llama.cpp's converter and vocabularies not unpacked (run scripts/setup.sh)")


def read_vocab_tests(gguf: Path):
    inp = Path(str(gguf) + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    if inp and inp[-1] == "":
        inp = inp[:-1]
    out = Path(str(gguf) + ".out").read_text(encoding="utf-8").split("\n")
    out = [[int(x) for x in line.split()] for line in out[:len(inp)]]
    return inp, out


@pytest.mark.parametrize("name", ["llama-spm", "phi-3"])
def test_llama_cpp_expected_outputs(name):
    gguf = LLAMA_CPP / "models" / f"ggml-vocab-{name}.gguf"
    texts, want = read_vocab_tests(gguf)
    assert len(texts) == len(want) >= 40
    got = run_jsonl(gguf, [as_item(t.encode("utf-8")) for t in texts], "--no-special")
    bad = [(t, w, g) for t, w, g in zip(texts, want, got) if w != g]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]!r}"
    # With special tokens: BOS (add_bos_token defaults to true for these vocabularies) in front.
    got_bos = run_jsonl(gguf, [as_item(t.encode("utf-8")) for t in texts])
    assert all(g == [1] + w for g, w in zip(got_bos, want))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tokenizer.model (sentencepiece BPE), its tokenizer.json (transformers) and its GGUF (llama.cpp)."""
    import sentencepiece as spm
    import transformers

    d = tmp_path_factory.mktemp("spm")
    text = (DATA / "text" / "moby-dick.txt").read_text(encoding="utf-8")[:300000]
    (d / "train.txt").write_text(text, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(d / "train.txt"), model_prefix=str(d / "tokenizer"), vocab_size=1000, model_type="bpe",
        byte_fallback=True, character_coverage=0.99, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        user_defined_symbols=["[USER]"], control_symbols=["<|ctrl|>"], add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", num_threads=1, minloglevel=2)
    hf = d / "hf"
    hf.mkdir()
    shutil.copy(d / "tokenizer.model", hf / "tokenizer.model")
    tok = transformers.LlamaTokenizerFast.from_pretrained(hf, legacy=True)
    tok.save_pretrained(hf)
    j = json.loads((hf / "tokenizer.json").read_text(encoding="utf-8"))
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "\u2581"}]}
    j["pre_tokenizer"] = None
    j["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    for t in j["added_tokens"]:
        if t["content"] == "[USER]":
            t["special"] = False  # a user-defined piece: text, not a control token
    (hf / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False), encoding="utf-8")
    # Token types for llama.cpp's converter, as a Llama-2-style release declares them.
    tc = json.loads((hf / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["add_bos_token"], tc["add_eos_token"] = True, False
    tc["added_tokens_decoder"] = {
        str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": special} for i, c, special in ((3, "<|ctrl|>", True), (4, "[USER]", False))}
    (hf / "tokenizer_config.json").write_text(json.dumps(tc), encoding="utf-8")
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(hf)
    gguf = d / "vocab.gguf"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LLAMA_CPP / "gguf-py"), *sys.path]))
    r = subprocess.run([sys.executable, str(LLAMA_CPP / "convert_hf_to_gguf.py"), str(hf), "--vocab-only",
                        "--outfile", str(gguf)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return hf / "tokenizer.json", gguf, text


def texts_for_parity(text):
    rng = random.Random(20241201)
    paragraphs = [p for p in text.split("\n\n") if p.strip()][:150]
    slices = []
    for _ in range(150):
        start = rng.randrange(len(text))
        slices.append(text[start:start + rng.choice([1, 2, 5, 31, 200, 1000])])
    adversarial = ["", " ", "  ", "\n", " \t\r\n ", "   leading", "trailing   ", "Hello  world", "2024 1 23 4567",
                   "👍🏽 emoji 👨‍👩‍👧‍👦", "中文 日本語 한국어", "ſ'ſ K'K", "x" * 3000, "a\u00a0b\u2003c",
                   "<s>a</s>", "a[USER]b", "[USER]b", "x [USER] y", "<|ctrl|>x<|ctrl|>", "<s", "USER]", "▁▁ ▁ x▁y",
                   "<0x41> literally", "tab\tseparated\tvalues"]
    return paragraphs + slices + adversarial


def test_trained_vocabulary_equals_tokenizers(trained):
    from tokenizers import Tokenizer

    tok_json, gguf, text = trained
    hf = Tokenizer.from_file(str(tok_json))
    items = texts_for_parity(text)
    for add_special, extra in ((False, ["--no-special"]), (True, [])):
        got = run_jsonl(gguf, [as_item(t.encode("utf-8")) for t in items], *extra)
        for t, g in zip(items, got):
            assert g == hf.encode(t, add_special_tokens=add_special).ids, (t, add_special)
    # Decode, with and without special tokens.
    ids = [hf.encode(t).ids for t in items] + [[1, 5, 1, 300, 2], list(range(0, 1000, 7))]
    for skip, extra in ((False, []), (True, ["--no-special"])):
        got = run_jsonl(gguf, ids, "--decode", *extra)
        for i, g in zip(ids, got):
            assert g == hf.decode(i, skip_special_tokens=skip), (i, skip)


def test_after_a_special_token_llama_cpp_adds_the_prefix_space(trained):
    tok_json, gguf, _ = trained
    vocab = json.loads(tok_json.read_text())["model"]["vocab"]
    got = run_jsonl(gguf, ["[USER] x"], "--no-special")[0]
    # "[USER]" then " x" with the prefix space: "▁▁x", which merges as the vocabulary allows.
    alone = run_jsonl(gguf, [" x"], "--no-special")[0]
    assert got == [vocab["[USER]"]] + alone


def test_invalid_utf8_falls_back_to_bytes_as_llama_cpp(trained):
    tok_json, gguf, _ = trained
    vocab = json.loads(tok_json.read_text())["model"]["vocab"]
    byte = lambda b: vocab["<0x%02X>" % b]
    space = vocab["▁"]

    def enc(data: bytes):
        return run_jsonl(gguf, [as_item(data)], "--no-special")[0]

    assert enc(b"\xff") == [space, byte(0xFF)]
    assert enc(b"\x80\x80") == [space, byte(0x80), byte(0x80)]
    assert enc(b"the\x80") == enc(b"the") + [byte(0x80)]
    assert enc(b"the\xc3") == enc(b"the") + [byte(0xC3)]
    # A lead byte of a 3-byte sequence takes the next two bytes with it, valid or not: "\xe2\x82" + "x".
    assert enc(b"\xe2\x82x") == [space, byte(0xE2), byte(0x82), byte(ord("x"))]
    # Decode of byte tokens that are not UTF-8 gives U+FFFD per byte (tokenizers' ByteFallback).
    assert run_jsonl(gguf, [[byte(0xFF), vocab["▁the"]]], "--decode")[0] == "\ufffd the"
