"""Checks that transformers builds, from our config.json, a MambaForCausalLM whose parameters have
exactly our names and shapes (no weights needed: the model is built on the meta device).

Usage: python3 check_shapes.py DIR [DIR ...]
Each DIR holds config.json (as our checkpoints write it) and shapes.json ({name: shape} of our
parameters). Exits non-zero on the first difference.
"""
import json
import sys

import torch
from transformers import MambaConfig, MambaForCausalLM

for d in sys.argv[1:]:
    cfg = MambaConfig.from_pretrained(d)
    with torch.device("meta"):
        model = MambaForCausalLM(cfg)
    theirs = {k: list(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    ours = json.load(open(f"{d}/shapes.json"))
    if theirs != ours:
        only_t = sorted(set(theirs) - set(ours))[:5]
        only_o = sorted(set(ours) - set(theirs))[:5]
        diff = [k for k in ours if k in theirs and ours[k] != theirs[k]][:5]
        sys.exit(f"{d}: only transformers {only_t}, only ours {only_o}, shape differs {diff}")
    n = sum(torch.Size(s).numel() for s in theirs.values())
    print(f"{d}: {len(theirs)} tensors, {n / 1e6:.1f}M parameters, names and shapes equal")
