"""How fast the kart world renders, and how its questions come out.

    python -m benchmarks.kart_world_speed [--num_frames 200] [--workers 2]

Renders a throwaway split with the given worker processes, times it, makes its questions and
writes the figures to benchmarks/results/kart_world_speed.json: views per second (wall clock,
which other work on the machine slows), CPU milliseconds per view (which it does not), the
question distribution.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import fire

import generate_qa
from worlds import kart

RESULTS = Path(__file__).parent / "results"


def main(num_frames: int = 200, workers: int = 2, num_views: int = 10) -> None:
    """Time the world and the question generator on a temporary split.

    Args:
        num_frames: frames to render.
        workers: worker processes for the world.
        num_views: views per frame.
    """
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        kart.generate(split="bench", num_frames=num_frames, seed=424242, data_dir=tmp, num_views=num_views, workers=workers)
        world_s = time.perf_counter() - start
        start = time.perf_counter()
        generate_qa.generate(split="bench", data_dir=tmp)
        qa_s = time.perf_counter() - start
        stats = json.loads((Path(tmp) / "bench" / "balanced_qa_stats.json").read_text())
    views = num_frames * num_views
    # CPU seconds per view in this process: what a core costs, however busy the machine is.
    cpu_start, frames = time.process_time(), max(num_frames // 10, 5)
    for f in range(frames):
        kart.make_frame(seed=424242, frame=f, num_views=num_views)
    cpu_per_view = (time.process_time() - cpu_start) / (frames * num_views)
    result = {
        "views": views, "workers": workers, "cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "world_seconds": round(world_s, 2), "views_per_second": round(views / world_s, 1),
        "cpu_ms_per_view": round(1000 * cpu_per_view, 2),
        "views_per_second_per_core": round(1 / cpu_per_view, 1),
        "load_average": os.getloadavg()[0],
        "qa_seconds": round(qa_s, 2), "qa_pairs": sum(f["total"] for f in stats.values()), "qa_distribution": stats,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "kart_world_speed.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{views} views in {world_s:.1f} s with {workers} workers: {views / world_s:.0f} views/s "
          f"(load average {os.getloadavg()[0]:.1f}); {1000 * cpu_per_view:.1f} CPU ms per view "
          f"= {1 / cpu_per_view:.0f} views/s per free core; "
          f"{result['qa_pairs']} QA pairs in {qa_s:.1f} s -> {out}")


if __name__ == "__main__":
    fire.Fire(main)
