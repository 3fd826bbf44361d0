"""`hylo data --generate-with` (teacher samples on the inference engine) against transformers (the oracle).

On a tiny Llama checkpoint made here with transformers and a byte-level BPE tokenizer trained here (BOS added by
its post-processor, <eos> = 1): with --temperature 0 --mask-prompt every training document is BOS + a slice of the
tokenized prompt text (mask 0), then exactly transformers' greedy `generate` continuation of that prompt, stopping
after <eos> (mask 1), then the document end when the teacher did not end by itself (mask 0); index.json records
the generation. Seeded sampling with a fixed prompt length gives byte-identical datasets at --gen-batch 1 and 4
(each sample has its own seed, so the sequences sharing its steps do not change it) and a different one for
another seed.
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
VOCAB = 320
CORPUS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity. Call me Ishmael. Some years ago, "
    "never mind how long precisely, having little or no money in my purse, I thought I would sail about. "
) * 3


def run(*args):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    import transformers

    tok = train_byte_level_bpe(CORPUS, VOCAB)

    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=None,
                                   tie_word_embeddings=False)
    model = seeded_wide_model(cfg, "data_generate")
    with torch.no_grad():
        model.lm_head.weight[1] += 0.15  # <eos> more likely, so that some samples end inside their budget
    root = tmp_path_factory.mktemp("data_generate")
    model.save_pretrained(root / "teacher", safe_serialization=True)
    (root / "teacher" / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    (root / "prompts.txt").write_text(CORPUS)
    return model, tok, root


def read_split(ds, split):
    """(tokens, mask) per document of a split, in stream order."""
    index = json.loads((ds / "index.json").read_text())
    docs = []
    for shard in index["splits"][split]["shards"]:
        tok = np.fromfile(ds / f"{shard['name']}.tok", dtype="<u4")
        mask = np.fromfile(ds / f"{shard['name']}.mask", dtype=np.uint8) if index["has_mask"] else None
        offsets = list(np.fromfile(ds / f"{shard['name']}.docs", dtype="<u8")) + [len(tok)]
        for a, b in zip(offsets[:-1], offsets[1:]):
            docs.append((tok[a:b].tolist(), None if mask is None else mask[a:b].tolist()))
    return index, docs


def hf_greedy(model, prompt, n):
    model.generation_config.eos_token_id = 1  # stops after <eos>, which is kept, as hylo's generation does
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_samples_equal_transformers_generate(teacher, tmp_path):
    model, tok, root = teacher
    text_ids = tok.encode(CORPUS, add_special_tokens=False).ids
    ds = tmp_path / "ds"
    run("data", "--out", ds, "--generate-with", root / "teacher", "--prompts-from", root / "prompts.txt",
        "--num-samples", 7, "--max-new-tokens", 20, "--prompt-tokens", "3:9", "--temperature", 0,
        "--gen-batch", 3, "--seed", 11, "--mask-prompt", "--doc-end", "<eos>", "--quiet")
    index, docs = read_split(ds, "train")
    assert len(docs) == 7 and index["has_mask"] is True
    gen = index["build"]["generation"]
    assert gen["num_samples"] == 7 and gen["batch"] == 3 and gen["sampling"] == "greedy"
    doc_end = index["tokenizer"]["doc_end_id"]
    assert doc_end == 1
    ended = 0
    for tokens, mask in docs:
        n_prompt = mask.index(1)  # BOS + the slice are not targets; the first generated token is
        prompt = tokens[:n_prompt]
        assert prompt[0] == 0 and 4 <= n_prompt <= 10
        slice_ = prompt[1:]
        assert any(text_ids[i:i + len(slice_)] == slice_ for i in range(len(text_ids) - len(slice_) + 1))
        want = hf_greedy(model, prompt, 20)
        if want[-1] == 1:
            ended += 1
            assert tokens[n_prompt:] == want and mask[n_prompt:] == [1] * len(want)
        else:
            assert len(want) == 20
            assert tokens[n_prompt:] == want + [doc_end] and mask[n_prompt:] == [1] * 20 + [0]
    assert gen["eos_stops"] == ended
    assert 0 < ended < len(docs)  # both ways of ending were compared


def test_sampled_dataset_does_not_depend_on_the_batch(teacher, tmp_path):
    _, _, root = teacher

    def build(name, batch, seed):
        ds = tmp_path / name
        run("data", "--out", ds, "--generate-with", root / "teacher", "--prompts-from", root / "prompts.txt",
            "--num-samples", 8, "--max-new-tokens", 16, "--prompt-tokens", "6:6", "--temperature", 1.0,
            "--top-p", 0.9, "--gen-batch", batch, "--seed", seed, "--quiet")
        return [t for t, _ in read_split(ds, "train")[1]]

    one, four = build("b1", 1, 5), build("b4", 4, 5)
    assert one == four
    assert build("other", 4, 6) != four
