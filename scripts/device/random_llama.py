"""Writes a random-weight Llama checkpoint (config.json + model.safetensors + the given tokenizer files) with torch
alone -- the GPU machine has no safetensors or transformers package. Shape: SmolLM2-135M's (30 layers, width 576,
9 query / 3 KV heads, MLP 1536), vocabulary of the tokenizer. For serving benchmarks, where weights do not matter.

  python3 random_llama.py OUT_DIR TOKENIZER_DIR [--layers N]
"""
import json
import shutil
import struct
import sys
from pathlib import Path

import torch


def main():
    out, tok_dir = Path(sys.argv[1]), Path(sys.argv[2])
    layers = int(sys.argv[sys.argv.index("--layers") + 1]) if "--layers" in sys.argv else 30
    out.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / f, out / f)
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = 1 + max(max(tj["model"]["vocab"].values()), max((t["id"] for t in tj.get("added_tokens", [])), default=0))
    d, heads, kv, ff = 576, 9, 3, 1536
    hd = d // heads
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": d,
           "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
           "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16",
           "hidden_act": "silu"}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    g = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (heads * hd, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                       p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, heads * hd),
                       p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d),
                       p + "mlp.down_proj.weight": (d, ff), p + "input_layernorm.weight": (d,),
                       p + "post_attention_layernorm.weight": (d,)})
    header, blobs, offset = {}, [], 0
    for name, shape in shapes.items():
        t = (torch.ones(shape) if name.endswith("norm.weight") else 0.02 * torch.randn(shape, generator=g))
        raw = t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    print(f"random llama: {layers} layers, vocab {vocab}, {offset / 2**20:.0f} MiB bf16 -> {out}")


if __name__ == "__main__":
    main()
