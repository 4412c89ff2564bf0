"""Where the 6-bit char LM's gap to FP32 comes from (docs/integer-training.md, Runs).

Trains the char LM of ``airfoil train-int --task charlm`` in FP32 and at b bits for N seeds and
measures, on the held-out text: what quantising the forward GEMMs as the integer layers do costs
an FP32-trained model (both operands, activations only, weights only, one layer at a time); how
many of the activations' channels ShiftQuant puts in a finer group; and what each integer-trained
model loses with and without its own forward's rounding.
Run: python scripts/charlm_forward_study.py OUT.json [BITS] [SEEDS]
"""
import json
import sys

import torch

from airfoil.host.train_int import charlm_forward_study

torch.set_num_threads(1)  # the runs' float sums in a fixed order (see --threads in the docs)
bits = int(sys.argv[2]) if len(sys.argv) > 2 else 6
seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
study = charlm_forward_study(bits, seeds)
with open(sys.argv[1], "w") as f:
    json.dump(study, f, indent=1)
    f.write("\n")
for k, v in study["fp32_forward_cost"].items():
    print(f"FP32 model, forward {k:24s} bpc +{v['bpc_pct']:.3f}%  accuracy -{v['accuracy_pct']:.3f}%")
for k, v in study.get("integer", {}).items():
    print(f"integer model, {k:14s} bpc +{v['bpc_pct']:.3f}%  accuracy -{v['accuracy_pct']:.3f}%")
