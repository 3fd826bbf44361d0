"""Writes tests/data/tokenizer/tiny_spm.gguf: a vocabulary-only GGUF with a SentencePiece-score vocabulary
(tokenizer.ggml.model "llama"), made up here: <unk> <s> </s> (control), the 256 byte tokens <0x00>..<0xFF>, a
user-defined <|u|>, and pieces of lowercase English with scores that prefer longer pieces. The libFuzzer target
fuzz_tokenizer encodes with it. Re-run to regenerate:
    $HYLO_VENV/bin/python tests/data/tokenizer/make_tiny_spm.py
"""
from pathlib import Path

import gguf

pieces = ["▁", "e", "t", "a", "o", "n", "h", "s", "i", "r", "d", "l", "▁t", "he", "▁the", "▁a", "an", "in", "er",
          "▁s", "nd", "▁and", "on", "re", "at", "en", "▁w", "ha", "▁wh", "▁whale", "ale", "▁o", "▁of", "ea", "▁se",
          "▁sea", ",", ".", "▁▁", "▁▁▁▁", "é", "中", "▁中"]
tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["<|u|>"] + pieces
T = gguf.TokenType
types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256 + [T.USER_DEFINED] + [T.NORMAL] * len(pieces)
scores = [0.0] * (3 + 256 + 1) + [-float(i) / 4 + len(p) for i, p in enumerate(pieces)]

w = gguf.GGUFWriter(str(Path(__file__).parent / "tiny_spm.gguf"), "llama")
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)
w.add_add_bos_token(True)
w.add_add_space_prefix(True)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
