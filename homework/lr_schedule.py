"""The learning-rate schedule of every training loop: a linear warm-up, then a cosine decay.

A fresh network's first steps are large and noisy (and BatchNorm's statistics have not settled),
so the rate climbs linearly from peak / warmup_steps to its peak, then follows half a cosine down
to `final` x peak at the last step (Loshchilov & Hutter 2017, SGDR, arXiv:1608.03983).

    for group in optimizer.param_groups:
        group["lr"] = warmup_cosine(step, max_steps, learning_rate, warmup_steps=100, final=0.1)

Two shapes, both kept because committed references were trained with them:
- the cosine starts when the warm-up ends (the VLM, CLIP, SimCLR and the base's pretraining);
- with `overlap=True`, the warm-up ramp multiplies a cosine that runs over the whole run from
  step 0 (fusion and CILP, which warm up for one epoch).
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, peak: float, warmup_steps: int, final: float = 0.0,
                  overlap: bool = False) -> float:
    """The learning rate of STEP (0-based) out of TOTAL_STEPS."""
    if overlap:
        ramp = min(1.0, (step + 1) / warmup_steps)
        return peak * ramp * 0.5 * (1 + math.cos(math.pi * step / total_steps))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))
