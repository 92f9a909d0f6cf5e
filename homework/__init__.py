"""The homework package: the contract between a submission and the grader.

Each `load_*()` returns the committed reference model of one assignment, ready to use.
Imports are lazy so that one assignment's missing dependency never breaks another's.
"""

from __future__ import annotations


def load_vlm():
    """The fine-tuned VLM (a `BaseVLM` with the reference LoRA adapter), ready for `answer()`."""
    from .finetune import load_reference

    return load_reference()


def load_clip():
    """The reference CLIP model built on the VLM's two towers."""
    from .clip import load_reference

    return load_reference()


def load_fusion():
    """The reference RGB + LiDAR fusion classifier."""
    from .fusion import load_reference

    return load_reference()


def load_cilp():
    """The reference CILP RGB-only classifier."""
    from .cilp import load_reference

    return load_reference()


def load_simclr():
    """The reference SimCLR video encoder."""
    from .simclr import load_reference

    return load_reference()


def load_robot():
    """The reference robot sensor-fusion system (RoboticFeedbackSystem with its anomaly baseline)."""
    from .robot import load_reference

    return load_reference()
