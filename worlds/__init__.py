"""Procedural data worlds. Each module renders one kind of scene from a seed.

    python -m worlds kart --split train --num_frames 2000
    python -m worlds kart gallery --split train
    python -m worlds shapes --num_samples 1000
    python -m worlds balls --split train --num_videos 2000
"""
