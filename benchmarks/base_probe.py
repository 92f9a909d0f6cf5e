"""How well a base reads where each kart is, before any fine-tuning.

    python -m benchmarks.base_probe [--base tiny] [--split valid] [--num_views 600]

The base was pretrained to describe scenes ("... gnu front left ..."). This probe gives it the
description's start and a kart's name and depth ("describe the scene . answer : gnu front") and
checks the words it ranks first: "front" or "back" after the name, "left" or "right" after the
depth, for every clearly placed kart of the split's views (the same rules as the questions). It
tells a base whose decoder cannot tell where a named kart is from one that can, which a fine-tuning
run would otherwise take minutes to show. Side accuracy is also broken down by how far the kart
is from the ego across the picture (near the 6-pixel margin is the hard part).

Writes benchmarks/results/base_probe_<base name>.json.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import fire
import torch

from benchmarks.curves import RESULTS


def main(base: str = "tiny", split: str = "valid", data_dir: str = "data", num_views: int = 600) -> None:
    """Teacher-forced place probe of BASE's descriptions on NUM_VIEWS views of SPLIT.

    Args:
        base: "tiny" or a directory holding a kart_vlm base (as pretrain writes).
        split: kart split whose views are described (made on the spot if missing).
        data_dir: root folder of the data.
        num_views: views to probe (each of their clearly placed karts counts once).
    """
    from tqdm import tqdm

    from generate_qa import ensure_world, split_views
    from homework.base_vlm import BaseVLM
    from homework.modeling_kart_vlm import DESCRIBE_PROMPT
    from homework.vlm_inputs import pixel_values, text_batch

    vlm = BaseVLM(str(base), device="cpu")
    if vlm.kind != "kart_vlm":
        raise SystemExit("error: the probe reads the kit's own bases (their descriptions); pass --base tiny or a pretrain output")
    model, tok = vlm.model, vlm.tokenizer
    words = {w: tok.convert_tokens_to_ids(w) for w in ("front", "back", "left", "right")}
    split_dir = ensure_world(str(split), str(data_dir))
    views = [(str(Path(data_dir) / f), v) for f, v in split_views(split_dir)][:num_views]
    right, seen = defaultdict(int), defaultdict(int)
    with torch.no_grad():
        for path, view in tqdm(views, desc="probing", unit="view", mininterval=1):
            ego = view.ego
            karts = [k for k in view.others if ego and not (k.tiny or k.hidden) and view.side(k) and view.depth(k)]
            if not karts:
                continue
            # One row per kart, "[BOS] describe the scene . answer : NAME DEPTH [EOS]", right-padded: the
            # decoder is causal, so each row's logits up to its own end are those it would have alone.
            ids, mask, _ = text_batch(tok, [DESCRIBE_PROMPT] * len(karts), [f"{k.name} {view.depth(k)}" for k in karts])
            pixels = pixel_values([path]).expand(len(karts), -1, -1, -1)
            logits = model(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits  # (K, N + T, V)
            ends = model.num_image_tokens + mask.sum(1) - 1  # each row's [EOS]
            for k, row, end in zip(karts, logits, ends.tolist(), strict=True):
                said_depth = max(("front", "back"), key=lambda w: float(row[end - 2, words[w]]))  # after the name
                said_side = max(("left", "right"), key=lambda w: float(row[end - 1, words[w]]))  # after the depth
                far = abs(k.cx - ego.cx)
                band = "side, under 10 px" if far < 10 else "side, 10-25 px" if far < 25 else "side, 25 px or more"
                for name, ok in (("depth", said_depth == view.depth(k)), ("side", said_side == view.side(k)),
                                 (band, said_side == view.side(k))):
                    right[name] += ok
                    seen[name] += 1
    result = {"base": str(base), "fingerprint": vlm.fingerprint[:12], "split": str(split), "views": len(views),
              "accuracy": {name: round(right[name] / seen[name], 4) for name in seen},
              "karts": {name: seen[name] for name in seen}}
    for name in seen:
        print(f"{name:22s} {right[name] / seen[name]:.3f}  ({seen[name]} karts)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"base_probe_{Path(str(base)).name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    fire.Fire(main)
