"""Each tokenizer.json component hylo supports, against `tokenizers` 0.23: small BPE models are trained here
with one pipeline variant each (every Split behaviour with and without invert, Regex and String patterns,
Digits, Metaspace schemes, Whitespace/WhitespaceSplit, the normalizers, subword prefix/suffix, unk fusing,
added tokens with lstrip/rstrip/single_word/normalized) and must encode and decode identically on the
adversarial set and random slices of the shared text."""
import random

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from test_tokenizer_parity import SEED, adversarial, random_slices, text_files
from tokenizer_oracles import as_item, run_jsonl

BEHAVIORS = ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]


def variants():
    v = []
    for b in BEHAVIORS:
        for invert in (False, True):
            v.append((f"split_regex_{b}_{invert}", dict(pre=pre_tokenizers.Split(Regex(r"\s+|[\p{P}\d]"), b, invert=invert))))
        v.append((f"split_string_{b}", dict(pre=pre_tokenizers.Split(" ", b))))
    v += [
        ("digits_contiguous_bytelevel_prefix", dict(pre=pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=False),
                                                                                  pre_tokenizers.ByteLevel(add_prefix_space=True)]),
                                                   dec=decoders.ByteLevel(), bytelevel=True)),
        ("bytelevel_noregex", dict(pre=pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), dec=decoders.ByteLevel(),
                                   bytelevel=True)),
        ("metaspace_always_split", dict(pre=pre_tokenizers.Metaspace(prepend_scheme="always", split=True),
                                        dec=decoders.Metaspace(prepend_scheme="always"))),
        ("metaspace_never_split", dict(pre=pre_tokenizers.Metaspace(prepend_scheme="never", split=True),
                                       dec=decoders.Metaspace(prepend_scheme="never"))),
        ("metaspace_first_split", dict(pre=pre_tokenizers.Metaspace(prepend_scheme="first", split=True),
                                       dec=decoders.Metaspace(prepend_scheme="first"))),
        ("whitespace", dict(pre=pre_tokenizers.Whitespace())),
        ("whitespace_split", dict(pre=pre_tokenizers.WhitespaceSplit())),
        ("nfkc_strip_replace", dict(norm=normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(),
                                                                normalizers.Replace(Regex(r"\d+"), "#")]),
                                    pre=pre_tokenizers.WhitespaceSplit())),
        ("nfd", dict(norm=normalizers.NFD(), pre=pre_tokenizers.Metaspace())),
        ("nfc_prepend", dict(norm=normalizers.Sequence([normalizers.NFC(), normalizers.Prepend("_")]), pre=pre_tokenizers.Whitespace())),
        ("prefix_suffix", dict(pre=pre_tokenizers.WhitespaceSplit(), prefix="##", suffix="</w>")),
        ("unk_fused", dict(pre=pre_tokenizers.WhitespaceSplit(), unk=True, limit=40)),
        ("added_strip_single_normalized", dict(norm=normalizers.NFKC(), pre=pre_tokenizers.Metaspace(), added=True)),
    ]
    return v


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(SEED + 7)
    texts = [t.decode("utf-8", errors="replace") for t in adversarial()]
    train = [f.read_text(errors="replace")[:20000] for f in text_files()[:10]] + texts
    return train, adversarial() + random_slices(rng)[:120]


@pytest.mark.parametrize("name,cfg", variants(), ids=[n for n, _ in variants()])
def test_component_parity(tmp_path, corpus, name, cfg):
    train, inputs = corpus
    mkw = {k: v for k, v in (("unk_token", "[UNK]" if cfg.get("unk") else None), ("continuing_subword_prefix", cfg.get("prefix")),
                              ("end_of_word_suffix", cfg.get("suffix"))) if v is not None}
    model = models.BPE(fuse_unk=bool(cfg.get("unk")), **mkw)
    tok = Tokenizer(model)
    if "norm" in cfg:
        tok.normalizer = cfg["norm"]
    tok.pre_tokenizer = cfg["pre"]
    if "dec" in cfg:
        tok.decoder = cfg["dec"]
    kw = dict(vocab_size=600, show_progress=False, special_tokens=["[UNK]"] if cfg.get("unk") else [])
    if cfg.get("bytelevel"):
        kw["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    if cfg.get("limit"):
        kw["limit_alphabet"] = cfg["limit"]
    if cfg.get("prefix"):
        kw["continuing_subword_prefix"] = cfg["prefix"]
    if cfg.get("suffix"):
        kw["end_of_word_suffix"] = cfg["suffix"]
    tok.train_from_iterator(train, trainers.BpeTrainer(**kw))
    if cfg.get("added"):
        tok.add_special_tokens([AddedToken("<|im_start|>", lstrip=True, rstrip=True, normalized=False, special=True)])
        tok.add_tokens([AddedToken("ﬁsh", normalized=True), AddedToken("the", single_word=True, normalized=False),
                        AddedToken("<s>", lstrip=True, normalized=False)])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    strs = [t.decode("utf-8", errors="replace") for t in inputs]
    theirs = [e.ids for e in tok.encode_batch(strs)]
    ours = run_jsonl(path, [as_item(t) for t in inputs])
    bad = [i for i in range(len(inputs)) if ours[i] != theirs[i]]
    assert not bad, f"{name}: {len(bad)} differ; first {strs[bad[0]][:80]!r}: hylo {ours[bad[0]][:20]} vs {theirs[bad[0]][:20]}"
    ref_text = tok.decode_batch(theirs, skip_special_tokens=False)
    our_text = run_jsonl(path, theirs, "--decode")
    bad = [i for i in range(len(inputs)) if our_text[i] != ref_text[i]]
    if bad:
        a, b = our_text[bad[0]], ref_text[bad[0]]
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        pytest.fail(f"{name}: decode: {len(bad)} differ; first at char {k}: hylo {a[max(0, k - 40):k + 40]!r} vs "
                    f"tokenizers {b[max(0, k - 40):k + 40]!r}")
