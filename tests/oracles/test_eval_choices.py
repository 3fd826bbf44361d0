"""`hylo eval --choices` against lm-eval-harness's definitions, with transformers as the oracle.

A tiny random Llama (transformers, saved with save_pretrained) and a byte-level BPE tokenizer trained here score a
hand-made multiple-choice JSONL. The oracle follows lm-eval-harness (HFLM + ConfigurableTask, multiple_choice):

  * continuation = " " + choice (target_delimiter); trailing spaces of the context move to the continuation;
    context tokens = encode(context), continuation tokens = encode(context + continuation)[len(context tokens):],
    no special tokens; the fed sequence is (context + continuation)[:-1] and the log-probabilities of the
    continuation tokens are summed (transformers fp32 eager forward, log_softmax in fp64);
  * acc = argmax(ll) == gold; acc_norm = argmax(ll / len(choice)) == gold with len = Python len (code points),
    first index on ties (np.argmax).

hylo's per-item log-likelihoods (samples JSONL) must match within a derived bound, and its acc / acc_norm must equal
the oracle's exactly; the items are built so that acc and acc_norm disagree on some of them.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_checkpoints import seeded_wide_model
from tokenizer_oracles import train_byte_level_bpe

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
VOCAB = 300

CORPUS = (
    "The quick brown fox jumps over the lazy dog. A cat sat on the mat and looked at the bird. "
    "Question: what is two plus two? Answer: four. The river runs past the old mill to the sea. "
    "Café, naïve, über and résumé are words with accents. Numbers like 12, 345 and 6789 appear too. "
) * 20

ITEMS = [
    {"context": "The cat sat on the", "choices": ["mat", "sea", "a very long and winding answer about rivers"], "gold": 0},
    {"context": "Question: what is two plus two?\nAnswer:", "choices": ["four", "five hundred and twelve", "x"], "gold": 0},
    # Trailing space in the context: lm-eval moves it into the continuation.
    {"context": "The river runs past the old mill to the ", "choices": ["sea", "quick brown fox", "mat"], "gold": 0},
    # Non-ASCII choices: length in code points, not bytes.
    {"context": "Words with accents:", "choices": ["café", "naïve über", "résumé", "cat"], "gold": 2},
    {"query": "Numbers like", "choices": ["12", "345 and 6789 appear too", "the lazy dog"], "label": 1},
    {"context": "A cat sat on the mat and looked at the", "choices": ["bird", "birds and the bees", "b"], "gold": 0},
    {"context": "The quick brown fox jumps over the", "choices": ["lazy dog.", "dog", "fence"], "gold": 0},
    {"context": "Answer: four. The", "choices": ["river", "quick brown fox jumps over the lazy dog", "r"], "gold": 1},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import transformers

    tok = train_byte_level_bpe(CORPUS, VOCAB)

    root = tmp_path_factory.mktemp("eval_choices")
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=None,
                                   tie_word_embeddings=False)
    model = seeded_wide_model(cfg, "eval_choices")
    model_dir = root / "tiny_llama"
    model.save_pretrained(model_dir, safe_serialization=True)
    (model_dir / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    data = root / "items.jsonl"
    data.write_text("".join(json.dumps(it, ensure_ascii=False) + "\n" for it in ITEMS), encoding="utf-8")
    return model, tok, model_dir, data, root


def lm_eval_loglikelihood(model, tok, context, continuation):
    """HFLM._encode_pair + _loglikelihood_tokens for one request (fp32 forward, fp64 log_softmax)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation, add_special_tokens=False).ids
    ctx = tok.encode(context, add_special_tokens=False).ids
    cont = whole[len(ctx):]
    inp = (ctx + cont)[:-1]
    with torch.no_grad():
        logits = model(torch.tensor([inp])).logits[0].double()
    logp = torch.log_softmax(logits, -1)[len(inp) - len(cont):]
    picked = logp[torch.arange(len(cont)), torch.tensor(cont)]
    return float(picked.sum()), logp, len(cont)


def test_choices_acc_and_acc_norm_equal_lm_eval(setup):
    model, tok, model_dir, data, root = setup
    out = root / "report"
    r = subprocess.run([HYLO, "eval", "--model", str(model_dir), "--name", "tiny", "--choices", str(data),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(l) for l in (out / "samples-tiny.jsonl").read_text().splitlines()]
    assert len(samples) == len(ITEMS)

    acc = acc_norm = 0.0
    disagreements = 0
    for item, s in zip(ITEMS, samples):
        context = item.get("context", item.get("query"))
        gold = item.get("gold", item.get("label"))
        lls, bounds = [], []
        for choice in item["choices"]:
            ll, logp, n = lm_eval_loglikelihood(model, tok, context, " " + choice)
            lls.append(ll)
            # hylo runs the same fp32 math: allow a few fp32 ulps of the log-probabilities per token summed.
            bounds.append(n * 8 * np.finfo(np.float32).eps * max(1.0, float(logp.abs().max())))
        np.testing.assert_allclose(s["loglikelihoods"], lls, rtol=0, atol=max(bounds) + 1e-6)
        completion_len = np.array([float(len(c)) for c in item["choices"]])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(np.array(lls) / completion_len))
        assert s["pred"] == pred and s["pred_norm"] == pred_norm, (item, lls)
        acc += pred == gold
        acc_norm += pred_norm == gold
        disagreements += pred != pred_norm
    assert disagreements >= 1, "the items should make acc and acc_norm differ somewhere"
    got = report["models"][0]["multiple_choice"][str(data)]
    assert got["n"] == len(ITEMS)
    assert got["acc"] == pytest.approx(acc / len(ITEMS), abs=1e-12)
    assert got["acc_norm"] == pytest.approx(acc_norm / len(ITEMS), abs=1e-12)
    # The markdown report carries the same figures.
    md = (out / "report.md").read_text()
    assert f"| tiny | {data} | {len(ITEMS)} | {acc / len(ITEMS):.4f} | {acc_norm / len(ITEMS):.4f} |" in md


def test_limit_and_bad_files(setup):
    model, tok, model_dir, data, root = setup
    out = root / "limited"
    r = subprocess.run([HYLO, "eval", "--model", str(model_dir), "--name", "tiny", "--choices", str(data),
                        "--limit", "3", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "report.json").read_text())["models"][0]["multiple_choice"][str(data)]["n"] == 3
    bad = root / "bad.jsonl"
    bad.write_text('{"context": "x", "choices": ["a", "b"], "gold": 5}\n')
    r = subprocess.run([HYLO, "eval", "--model", str(model_dir), "--choices", str(bad), "--out", str(root / "b")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "line 1" in r.stderr and '"gold" 5 is outside [0, 2)' in r.stderr, r.stderr


def lm_eval_gsm8k_filters(output):
    """lm-eval gsm8k: strict-match and flexible-extract filters, then the exact_match normalisation."""
    import re
    strict = re.findall(r"#### (\-?[0-9\.\,]+)", output)
    strict = strict[0] if strict else "[invalid]"
    flex = re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", output)
    if flex:
        flex = [m for m in flex[-1] if m]
        flex = flex[0] if flex else "[invalid]"
    else:
        flex = "[invalid]"

    def norm(s):
        for pat in [",", "\\$", "(?s).*#### ", "\\.$"]:
            s = re.sub(pat, "", s)
        return s.lower()
    return strict, flex, norm


def test_cloze_generation_and_ruler_run_end_to_end(setup):
    model, tok, model_dir, data, root = setup
    text = root / "heldout.txt"
    text.write_text(CORPUS[:4000], encoding="utf-8")
    gen = root / "gen.jsonl"
    gen.write_text("".join(json.dumps({"question": f"What is {a} plus {b}?", "answer": f"{a}+{b}={a + b}\n#### {a + b}"})
                           + "\n" for a, b in [(1, 2), (3, 4), (10, 20)]))
    out = root / "e2e"
    r = subprocess.run([HYLO, "eval", "--model", str(model_dir), "--name", "tiny", "--text", str(text),
                        "--context", "64", "--stride", "32", "--cloze", str(text), "--cloze-items", "5",
                        "--cloze-words", "30", "--gen", str(gen), "--num-fewshot", "1", "--max-new-tokens", "24",
                        "--ruler", "niah_single_1,vt", "--lengths", "900", "--samples", "2", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "report.json").read_text())["models"][0]
    # Perplexity: sliding windows of 64 by 32 predict every token but the first.
    n_tokens = len(tok.encode(CORPUS[:4000]).ids)  # with <bos>, as hylo perplexity encodes
    assert m["perplexity"]["predicted"] == n_tokens - 1
    assert sum(b["count"] for b in m["perplexity"]["nll_by_position"]) == n_tokens - 1
    assert m["perplexity"]["bits_per_byte"] > 0
    assert m["cloze"]["n"] == 5 and 0 <= m["cloze"]["acc"] <= 1
    samples = [json.loads(l) for l in (out / "samples-tiny.jsonl").read_text().splitlines()]
    # Generation: hylo's extraction and matching equal lm-eval's regexes on the same outputs.
    gens = [s for s in samples if s["section"] == "generation"]
    assert len(gens) == 2
    strict_hits = flex_hits = 0
    for s, item in zip(gens, [(3, 4), (10, 20)]):
        strict, flex, norm = lm_eval_gsm8k_filters(s["output"])
        assert s["strict"] == strict and s["flexible"] == flex
        ref = norm(f"x\n#### {sum(item)}")
        strict_hits += norm(strict) == ref
        flex_hits += norm(flex) == ref
    g = m["generation"][str(gen)]
    assert g["strict_match"] == strict_hits / 2 and g["flexible_extract"] == flex_hits / 2
    # RULER: two tasks x one length x two samples, lengths within 1% of 900 in this tokenizer, scores in [0, 100].
    rul = [s for s in samples if s["section"] == "ruler"]
    assert len(rul) == 4
    for task, ttg in [("niah_single_1", 128), ("vt", 30)]:
        point = m["ruler"]["tasks"][task]["900"]
        assert point["samples"] == 2 and 0 <= point["score"] <= 100
        assert 891 <= point["mean_length"] <= 900
    for name in ["report.md", "ruler.svg", "nll_by_position.svg"]:
        assert (out / name).exists(), name
