"""Loads trainer checkpoints with Hugging Face transformers.

Usage: python3 check_transformers.py CKPT_DIR [GPT2_CKPT_DIR]
- CKPT_DIR holds expected.json from the Rust test: MambaForCausalLM.from_pretrained loads it and
  gives the same logits (max |logit difference| printed).
- GPT2_CKPT_DIR, a checkpoint of a model with GPT-2's vocabulary: AutoTokenizer.from_pretrained
  loads its tokenizer.json/tokenizer_config.json (GPT-2's ids and round trip), and
  pipeline("text-generation", model=GPT2_CKPT_DIR) generates from it with its
  generation_config.json.
Exits non-zero on failure.
"""
import json
import sys

import torch
from transformers import AutoTokenizer, MambaForCausalLM, pipeline

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
if diff > 1e-4 * max(scale, 1.0):
    sys.exit(1)

if len(sys.argv) > 2:
    gpt2_ckpt = sys.argv[2]
    tok = AutoTokenizer.from_pretrained(gpt2_ckpt)
    text = "The meaning of life is 42, isn't it?"
    ids = tok(text)["input_ids"]
    # GPT-2's ids for this text (tiktoken r50k_base).
    want = [464, 3616, 286, 1204, 318, 5433, 11, 2125, 470, 340, 30]
    if ids != want or tok.decode(ids) != text or tok.eos_token_id != 50256:
        sys.exit(f"AutoTokenizer: ids {ids} (want {want}), decoded {tok.decode(ids)!r}, eos {tok.eos_token_id}")
    print(f"AutoTokenizer: {type(tok).__name__}, {len(tok)} tokens, ids and round trip ok")
    gen = pipeline("text-generation", model=gpt2_ckpt)
    out = gen("Once upon a time", max_new_tokens=8, do_sample=False)
    generated = out[0]["generated_text"]
    if not generated.startswith("Once upon a time") or len(generated) <= len("Once upon a time"):
        sys.exit(f"text-generation pipeline: {out}")
    print(f"text-generation pipeline: {generated!r}")
