"""Shared pieces of the tokenizer oracle tests: where the data is, the reference `tokenizers` objects
(including the ones built here because no file exists for them), and running `hylo tokenize --jsonl`."""
import functools
import json
import os
import pathlib
import subprocess

HOME_CACHE = pathlib.Path(os.environ.get("HYLO_CACHE", pathlib.Path.home() / ".cache" / "hylo"))
DATA = pathlib.Path(os.environ.get("HYLO_DATA", HOME_CACHE / "data"))
TEACHER_GGUF = pathlib.Path(os.environ.get("HYLO_TEACHER_GGUF", HOME_CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
SOURCE = pathlib.Path(os.environ.get("HYLO_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))


def hylo_bin():
    b = os.environ.get("HYLO_BIN")
    if b:
        return b
    for cand in ("build/bin/hylo", "build/cpu-release/bin/hylo", "build/h-tok/bin/hylo"):
        if (SOURCE / cand).exists():
            return str(SOURCE / cand)
    raise RuntimeError("set HYLO_BIN to the hylo binary")


def start_jsonl(tokenizer_path, lines, *extra):
    """Starts `hylo tokenize --jsonl` on JSON lines (input fed through a temporary file, so the caller can
    work while hylo runs); finish_jsonl() collects the parsed output lines."""
    import tempfile
    f = tempfile.TemporaryFile()
    f.write("".join(json.dumps(x) + "\n" for x in lines).encode())
    f.seek(0)
    out = tempfile.TemporaryFile()
    p = subprocess.Popen([hylo_bin(), "tokenize", "--tokenizer", str(tokenizer_path), "--jsonl", *extra],
                         stdin=f, stdout=out, stderr=subprocess.PIPE)
    p._hylo_files = (f, out)
    return p


def finish_jsonl(p, n_expected):
    _, err = p.communicate(timeout=600)
    f, out = p._hylo_files
    out.seek(0)
    text = out.read().decode()
    f.close()
    out.close()
    assert p.returncode == 0, err.decode(errors="replace")
    res = [json.loads(l) for l in text.split("\n") if l]
    assert len(res) == n_expected, (len(res), n_expected, err.decode(errors="replace"))
    return res


def run_jsonl(tokenizer_path, lines, *extra):
    """Runs `hylo tokenize --jsonl` on JSON lines; returns the parsed output lines."""
    return finish_jsonl(start_jsonl(tokenizer_path, lines, *extra), len(lines))


def as_item(data: bytes):
    """A --jsonl input item: a JSON string for valid UTF-8, else the raw bytes in hex."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": data.hex()}


@functools.lru_cache(maxsize=2)
def smollm2_gguf_oracle(gguf_path):
    """The reference tokenizer for the SmolLM2 GGUF vocabulary.

    transformers' GGUF converter (integrations/gguf/gguf_tokenizer_mapping.py) builds a GPT2Tokenizer from the
    tokens and merges and only swaps the pre-tokenizer for the `tokenizer.ggml.pre` values in its table --
    "smollm" is not in it, so it would pre-tokenize with plain ByteLevel and split digit runs differently
    from the model's training. SmolLM2's own tokenizer.json (HuggingFaceTB/SmolLM2-135M-Instruct) is
    BPE with pre_tokenizer Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
    use_regex=True)], a ByteLevel decoder, no BOS added (add_bos_token is false in the GGUF too), and the
    control tokens (token_type 3) as special added tokens; that is what llama.cpp's "smollm" pre-tokenizer
    reproduces and what this oracle is.
    """
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(str(gguf_path))
    tokens = list(r.fields["tokenizer.ggml.tokens"].contents())
    merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
    types = list(r.fields["tokenizer.ggml.token_type"].contents())
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, ty in zip(tokens, types) if ty == 3])
    template = r.fields["tokenizer.chat_template"].contents()
    return tok, template


LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")


def train_spm_style_bpe(texts, out_dir, metaspace: bool, template: str):
    """A SentencePiece-style BPE tokenizer.json as HF converts Llama-2/Mistral: <unk> <s> </s>, then the 256
    byte tokens <0x00>..<0xFF>, then learned pieces; byte_fallback and fuse_unk; BOS added by the template.
    metaspace=False: the legacy Llama-2 pipeline (normalizer Prepend("▁") + Replace(" ", "▁"), no
    pre-tokenizer, decoder Replace/ByteFallback/Fuse/Strip); True: Metaspace(prepend_scheme="first",
    split=False) pre-tokenizer and decoder with no normalizer (legacy=False files)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    # Learned on Metaspace-split words (as SentencePiece trains on whitespace-delimited pieces); the
    # resulting tokenizer then runs without a pre-tokenizer, like Llama-2's.
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    learner.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, limit_alphabet=80, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": template,
         "tokenizer_class": "LlamaTokenizerFast"}))
    return tok


def train_byte_level_bpe(corpus, vocab_size):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `corpus` (GPT-2's pre-tokenizer and decoder), with
    <bos> = 0 and <eos> = 1 and BOS added by its post-processor: the tokenizer of the tiny oracle checkpoints."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([corpus], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    assert tok.token_to_id("<bos>") == 0 and tok.token_to_id("<eos>") == 1
    return tok
