"""`hylo data` against Hugging Face `tokenizers` / `transformers` (the oracles) on real text.

Every document of a dataset built from Moby-Dick paragraphs and a State of the Union address equals
`tokenizers`' encoding of that paragraph followed by <|endoftext|> (GPT-2); the held-out documents are the byte
ranges index.json names and heldout.txt holds exactly their text; an unmasked chat document equals
transformers' `apply_chat_template(..., tokenize=True)` plus the document end (Llama-3.2); bad options fail
with messages naming the option or file.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

HYLO = os.environ.get("HYLO_BIN", "build/bin/hylo")
DATA = Path(os.environ.get("HYLO_DATA", str(Path.home() / ".cache/hylo/data")))
GPT2 = DATA / "tokenizers/gpt2/tokenizer.json"
LLAMA = DATA / "tokenizers/llama3_2"


def run(*args, check=True):
    r = subprocess.run([HYLO, *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, f"hylo {' '.join(map(str, args))} failed:\n{r.stderr}"
    return r


def documents(ds, split):
    """Token lists of every document of a split, in stream order."""
    index = json.loads((ds / "index.json").read_text())
    docs = []
    for shard in index["splits"][split]["shards"]:
        tok = np.fromfile(ds / f"{shard['name']}.tok", dtype="<u4")
        offsets = list(np.fromfile(ds / f"{shard['name']}.docs", dtype="<u8")) + [len(tok)]
        docs += [tok[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    return docs


def paragraphs(text):
    """Runs of non-blank lines, as `hylo data --paragraphs` cuts them (byte ranges of the UTF-8 text)."""
    raw = text.encode()
    out, start, end, pos = [], None, None, 0
    for line in raw.split(b"\n"):
        line_end = pos + len(line)
        if line.strip(b" \t\r") == b"":
            if start is not None:
                out.append((start, end))
            start = None
        else:
            start = pos if start is None else start
            end = line_end
        pos = line_end + 1
    if start is not None:
        out.append((start, end))
    return [(a, b, raw[a:b].decode()) for a, b in out]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not GPT2.exists():
        pytest.skip(f"{GPT2} missing (scripts/setup.sh unpacks it)")
    d = tmp_path_factory.mktemp("corpus")
    moby = (DATA / "text/moby-dick.txt").read_text().splitlines(keepends=True)
    (d / "moby.txt").write_text("".join(moby[:400]))
    sotu = sorted((DATA / "text/sotu").glob("*.txt"))[0]
    (d / "sotu.txt").write_text(sotu.read_text()[:20000])
    return d


def test_documents_equal_tokenizers_encoding_and_heldout_is_what_the_index_says(corpus, tmp_path):
    from tokenizers import Tokenizer

    ds = tmp_path / "ds"
    r = run("data", "--tokenizer", GPT2, "--out", ds, "--paragraphs", "--heldout-docs", 5, "--seed", 3, "--quiet",
            corpus / "moby.txt", corpus / "sotu.txt")
    assert re.search(r"held-out \d+ tokens in 5 documents", r.stdout), r.stdout
    tok = Tokenizer.from_file(str(GPT2))
    eot = tok.token_to_id("<|endoftext|>")
    expected = {}
    for f in ("moby.txt", "sotu.txt"):
        for a, b, text in paragraphs((corpus / f).read_text()):
            expected[(str(corpus / f), a, b)] = tok.encode(text).ids + [eot]
    index = json.loads((ds / "index.json").read_text())
    held = [(d["path"], d["bytes"][0], d["bytes"][1]) for d in index["heldout"]["documents"]]
    assert len(held) == 5 and all(h in expected for h in held)
    assert documents(ds, "heldout") == [expected[h] for h in held]
    train = sorted(map(tuple, documents(ds, "train")))
    assert train == sorted(tuple(v) for k, v in expected.items() if k not in held)
    texts = [(corpus / Path(p).name).read_bytes()[a:b].decode() for p, a, b in held]
    assert (ds / "heldout.txt").read_text() == "\n\n".join(texts)
    assert index["tokenizer"]["doc_end_id"] == eot and index["tokenizer"]["bos_added"] is False


def test_chat_document_equals_transformers_chat_template(tmp_path):
    if not (LLAMA / "tokenizer_config.json").exists():
        pytest.skip(f"{LLAMA} missing")
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a whale."},
                {"role": "assistant", "content": "The sperm whale."}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": messages}) + "\n")
    run("data", "--tokenizer", LLAMA, "--out", tmp_path / "ds", "--quiet", tmp_path / "chat.jsonl")
    hf = AutoTokenizer.from_pretrained(str(LLAMA))
    # hylo renders the template's default date (the template would call strftime_now when none is given).
    want = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=False, date_string="26 Jul 2024")
    if isinstance(want, dict) or hasattr(want, "input_ids"):
        want = want["input_ids"]
    end = json.loads((tmp_path / "ds/index.json").read_text())["tokenizer"]["doc_end_id"]
    assert end == hf.convert_tokens_to_ids("<|end_of_text|>")
    assert documents(tmp_path / "ds", "train") == [list(want) + [end]]


@pytest.mark.parametrize("args,message", [
    (["--heldout-fraction", "0.1", "--heldout-docs", "2"], "give at most one"),
    (["--heldout-lines", "moby.txt:9-3"], "--heldout-lines"),
    (["--doc-end", "<|no-such-token|>"], "--doc-end"),
    (["--paragraphs", "--doc-separator", "x"], "at most one"),
    (["--num-samples", "3"], "--generate-with"),
])
def test_bad_options_fail_with_a_message(corpus, tmp_path, args, message):
    r = run("data", "--tokenizer", GPT2, "--out", tmp_path / "ds", corpus / "moby.txt", *args, check=False)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "ds").exists()


def test_missing_input_is_named(corpus, tmp_path):
    r = run("data", "--tokenizer", GPT2, "--out", tmp_path / "ds", tmp_path / "nope.txt", check=False)
    assert r.returncode != 0 and "nope.txt" in r.stderr, r.stderr
