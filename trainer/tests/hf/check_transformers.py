"""Loads a trainer checkpoint with Hugging Face transformers and compares its logits with ours.

Usage: python3 check_transformers.py CKPT_DIR   (CKPT_DIR holds expected.json from the Rust test)
Prints the max |logit difference| and exits non-zero on failure.
"""
import json
import sys

import torch
from transformers import MambaForCausalLM

ckpt = sys.argv[1]
model, info = MambaForCausalLM.from_pretrained(ckpt, output_loading_info=True)
model.eval()
missing = [k for k in info["missing_keys"] if k != "lm_head.weight"]
if missing or info["unexpected_keys"] or info["mismatched_keys"]:
    sys.exit(f"loading info: {info}")
ref = json.load(open(f"{ckpt}/expected.json"))
with torch.no_grad():
    logits = model(torch.tensor([ref["tokens"]])).logits[0].float()
expected = torch.tensor(ref["logits"], dtype=torch.float32)
diff = (logits - expected).abs().max().item()
scale = expected.abs().max().item()
print(f"max |diff| {diff:.3e} (logit scale {scale:.3e})")
sys.exit(0 if diff <= 1e-4 * max(scale, 1.0) else 1)
