"""Inputs for `hylo train` process tests: a tiny random Llama made by `transformers` (with a byte-level BPE tokenizer
trained on its text), a 1 MLA + 1 GDN hybrid of it by `hylo upcycle`, and a dataset by `hylo data`."""
import random
from pathlib import Path

import torch

from tokenizer_oracles import train_byte_level_bpe

PLAN = """name: tiny-1mla1gdn
teacher: {num_layers: 2, hidden_size: 32, num_heads: 2, num_kv_heads: 1, head_dim: 16}
mla_layers: [1]
linear: gdn
mla:
  q_lora_rank: 16
  kv_lora_rank: 8
  qk_nope_head_dim: 8
  qk_rope_head_dim: 8
  v_head_dim: 16
  num_kv_groups: 1
  latent_norms: false
  rope: {type: default}
gdn: {num_heads: 2, head_k_dim: 16, head_v_dim: 16, conv_size: 4}
"""


def make_train_inputs(tmp: Path, hylo) -> Path:
    """Writes tmp/{text.txt, teacher/, plan.yaml, student/, data/}; `hylo(*args)` runs the CLI. Returns tmp."""
    import transformers

    rng = random.Random(3)
    words = ["whale", "sea", "ship", "Ahab", "white", "deep", "harpoon", "the", "and", "of"]
    text = "\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randrange(10, 30))) for _ in range(60)) + "\n"
    (tmp / "text.txt").write_text(text)
    tok = train_byte_level_bpe(text, 300)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                   max_position_embeddings=256, tie_word_embeddings=True)
    teacher = tmp / "teacher"
    transformers.LlamaForCausalLM(cfg).save_pretrained(teacher, safe_serialization=True)
    (teacher / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    (tmp / "plan.yaml").write_text(PLAN)
    hylo("upcycle", teacher, "--plan", tmp / "plan.yaml", "--out", tmp / "student", "--calibration-tokens", "0",
         "--no-progress")
    hylo("data", "--tokenizer", teacher, "--out", tmp / "data", "--paragraphs", tmp / "text.txt",
         "--heldout-docs", "4", "--doc-end", "none", "--quiet")
    return tmp
