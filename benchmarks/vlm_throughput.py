"""Inference throughput (answers per second) and peak memory of a base VLM.

    python -m benchmarks.vlm_throughput [--base tiny] [--device cuda]
"""

from __future__ import annotations

import time

import fire

from benchmarks.curves import peak_memory
from homework.base_vlm import BaseVLM
from homework.cli_checks import check_int
from homework.data import VQADataset


def main(base: str = "tiny", split: str = "valid", data_dir: str = "data", num_questions: int = 512,
              batch_size: int = 64, device: str | None = None) -> None:
    """Inference throughput (answers per second) and peak memory of a base.

    Args:
        base: "tiny", a local directory or a hub name.
        split: split whose questions are asked.
        data_dir: root folder of the data.
        num_questions: questions to time.
        batch_size: questions per call of answer().
        device: cpu or cuda (default: cuda when available).
    """
    num_questions = check_int("num_questions", num_questions, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    ds = VQADataset(str(split), data_dir=str(data_dir), max_samples=num_questions)
    vlm = BaseVLM(base, device=device)
    items = [ds[i] for i in range(len(ds))]
    vlm.answer([items[0]["image_path"]], [items[0]["question"]])  # warm up
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        vlm.answer([c["image_path"] for c in chunk], [c["question"] for c in chunk])
    seconds = time.perf_counter() - start
    memory = peak_memory(vlm.device.type)
    gpu = f", GPU peak {memory['peak_gpu_mib']} MiB" if memory["peak_gpu_mib"] is not None else ""
    print(f"{len(items)} answers in {seconds:.2f} s on {vlm.device}: {len(items) / seconds:.1f} answers/s; "
          f"peak RSS {memory['peak_rss_mib']} MiB{gpu}")


if __name__ == "__main__":
    fire.Fire(main)
