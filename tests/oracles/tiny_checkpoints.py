"""Tiny random transformers checkpoints for the oracle tests."""
import zlib

import torch


def seeded_wide_model(cfg, seed_name):
    """transformers' causal LM for `cfg` (fp32, eval, eager attention), built after seeding torch with
    crc32(seed_name) and then re-initialised wider than transformers' default (std 0.02): norm weights
    1 + 0.1 N(0, 1), every other parameter 0.1 N(0, 1). Next-token logits are then far from uniform, so near-ties,
    which fp32 rounding may break either way, are rare."""
    import transformers

    torch.manual_seed(zlib.crc32(seed_name.encode()))
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    return model
