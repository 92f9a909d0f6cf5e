"""homework/lr_schedule.py: warm-up then cosine, and the exact values the references were trained with."""

from __future__ import annotations

import math

import pytest

from homework.lr_schedule import warmup_cosine


def test_warm_up_then_cosine_to_the_floor():
    lrs = [warmup_cosine(s, 1000, 1e-3, 100, final=0.1) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)  # linear ramp to the peak
    assert all(a <= b for a, b in zip(lrs[:99], lrs[1:100], strict=True))
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))  # then only down
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-3) and min(lrs[100:]) >= 1e-4  # to final x peak
    assert warmup_cosine(5000, 1000, 1e-3, 100, final=0.1) == pytest.approx(1e-4)  # and stays there


@pytest.mark.parametrize("step", [0, 7, 99, 100, 101, 555, 999])
def test_the_formulas_the_committed_references_were_trained_with(step):
    """Bit for bit: the VLM's and CLIP's (to a tenth), SimCLR's (to zero), fusion's and CILP's (overlapping)."""
    total, peak, warmup = 1000, 3e-3, 100
    if step < warmup:
        assert warmup_cosine(step, total, peak, warmup, final=0.1) == peak * (step + 1) / warmup
    else:
        progress = min((step - warmup) / max(1, total - warmup), 1.0)
        vlm = peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        simclr = peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        assert warmup_cosine(step, total, peak, warmup, final=0.1) == vlm
        assert warmup_cosine(step, total, peak, warmup) == simclr
    fusion = peak * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    assert warmup_cosine(step, total, peak, warmup, overlap=True) == fusion
