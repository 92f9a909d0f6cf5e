"""Fine-tune the base VLM with LoRA to answer questions about kart frames.

    python -m homework.finetune train                      # default settings, on data/train
    python -m homework.finetune train --output_dir homework/checkpoints/vlm --overwrite
    python -m homework.finetune test                       # the committed reference, on valid
    python -m homework.finetune test runs/finetune-... --split holdout
    python -m homework.finetune demo_train                 # a minute on data/train_demo

A checkpoint directory holds the LoRA adapter (`adapter_config.json`,
`adapter_model.safetensors`), the tokenizer, `training_config.json` (the resolved settings and
the fingerprint of the base it was trained on) and `training_curve.png`.
"""

from __future__ import annotations

import time
from pathlib import Path

import fire
import numpy as np
import torch

from homework.base_vlm import BaseVLM
from homework.checkpoint import (
    check_base,
    load_adapter,
    open_checkpoint,
    output_folder,
    reference_dir,
    save_adapter,
    write_record,
)
from homework.cli_checks import check_int, check_ints, check_number, fail, set_threads
from homework.lr_schedule import warmup_cosine
from homework.training_log import TrainingLog
from homework.vlm_inputs import PictureCache, frozen_features, text_batch

REFERENCE_DIR = reference_dir("vlm")  # what homework.load_vlm() reads
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model, rank: int = 16, alpha: int = 32, vision_blocks: int = 0):
    """Wrap a base model with LoRA adapters on the decoder's attention and MLP projections.

    Some small modules are trained in full too (peft's modules_to_save): the token embeddings
    and the output layer, because the question words and some answer words (kart names) were
    never told apart in the base's pretraining; the connector, so that the fine-tuned model
    can re-read the vision features; and the vision encoder's last `vision_blocks` blocks, so
    that the features can adapt to the questions too."""
    from peft import LoraConfig, get_peft_model

    # BEGIN SOLUTION (hint: a peft LoraConfig on the attention and MLP projections, then get_peft_model)
    save = None
    if hasattr(model, "num_image_tokens"):  # the kit's own base
        num_blocks = len(model.vision.stages)
        save = ["embed_tokens", "connector", "lm_head"]
        save += [f"vision.stages.{i}" for i in range(num_blocks - vision_blocks, num_blocks)]
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, modules_to_save=save)
    return get_peft_model(model, config)
    # END SOLUTION


def load_finetuned(checkpoint: str | Path, device: str | None = None) -> BaseVLM:
    """A BaseVLM with a fine-tuned adapter merged in; clear errors for a missing checkpoint or
    one trained on another base."""
    path = Path(checkpoint)
    record = open_checkpoint(path, "vlm", ("adapter_config.json", "adapter_model.safetensors"))
    vlm = BaseVLM(record.get("base", "tiny"), device=device)
    check_base(path, record, vlm.fingerprint, verb="fine-tuned")
    vlm.model = load_adapter(vlm.model, path).merge_and_unload().to(vlm.device).eval()
    return vlm


def load_reference() -> BaseVLM:
    """The committed reference checkpoint, ready for `answer()`."""
    return load_finetuned(REFERENCE_DIR)


def train(
    output_dir: str | None = None,
    base: str = "tiny",
    data_dir: str = "data",
    train_split: str = "train",
    valid_split: str = "valid",
    max_steps: int = 1500,
    num_train_epochs: float | None = None,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    lora_rank: int = 16,
    vision_blocks: int = 2,
    seed: int = 0,
    eval_every: int = 250,
    eval_samples: int = 500,
    overwrite: bool = False,
    threads: int = 0,
) -> None:
    """Fine-tune BASE with LoRA on TRAIN_SPLIT's question-answer pairs; keep the best checkpoint
    by accuracy on VALID_SPLIT.

    Args:
        output_dir: checkpoint directory (default: runs/finetune-<date>-<time>).
        base: "tiny" (the kit's base), "tiny_stk" (the kit's base pretrained on real frames), a local
            SmolVLM-family directory, or a hub name.
        data_dir: root folder of the data (missing train/valid splits are made on the spot).
        train_split: split to train on.
        valid_split: split to evaluate on while training.
        max_steps: optimisation steps (ignored when --num_train_epochs is given).
        num_train_epochs: passes over the training pairs, instead of --max_steps.
        batch_size: questions per step.
        learning_rate: peak AdamW learning rate (warm-up, then cosine to a tenth).
        lora_rank: LoRA rank r (alpha = 2r).
        vision_blocks: the vision encoder's last blocks trained in full too (the default, 2, is
            its last stride-2 stage and residual block; 0 freezes the encoder, for cheaper steps).
        seed: seed of the adapter's initialisation and of the batches.
        eval_every: steps between evaluations.
        eval_samples: valid questions per evaluation.
        overwrite: replace an existing OUTPUT_DIR.
        threads: torch CPU threads (0: torch's default; 1 is faster on a machine that is busy).
    """
    from tqdm import tqdm

    from homework.data import VQADataset, benchmark

    # Fire types values by their look: check every one before any work.
    check_ints(max_steps=(max_steps, 1), batch_size=(batch_size, 1), lora_rank=(lora_rank, 1),
               vision_blocks=(vision_blocks, 0), seed=(seed, 0), eval_every=(eval_every, 1),
               eval_samples=(eval_samples, 1))
    learning_rate = check_number("learning_rate", learning_rate)
    set_threads(threads)
    out = output_folder(output_dir or Path("runs") / time.strftime("finetune-%Y%m%d-%H%M%S"), "adapter_config.json",
                        overwrite)

    torch.manual_seed(seed)
    train_set = VQADataset(str(train_split), data_dir=str(data_dir))
    valid_set = VQADataset(str(valid_split), data_dir=str(data_dir), max_samples=eval_samples, spread=True)
    if num_train_epochs is not None:
        num_train_epochs = check_number("num_train_epochs", num_train_epochs)
        max_steps = max(1, int(num_train_epochs * len(train_set) / batch_size))
    vlm = BaseVLM(base)
    if vlm.kind != "kart_vlm":
        fail("fine-tuning a SmolVLM-family base needs its chat-format data collator; this kit trains --base tiny")
    num_blocks = len(vlm.model.vision.stages)
    if vision_blocks > num_blocks:
        fail(f"--vision_blocks must be at most {num_blocks}, the vision encoder's number of blocks; got {vision_blocks}")
    vlm.model = add_lora(vlm.model, rank=lora_rank, alpha=2 * lora_rank, vision_blocks=vision_blocks)
    model, tok = vlm.model, vlm.tokenizer
    pictures = PictureCache(sorted({train_set[i]["image_path"] for i in range(len(train_set))}), desc=str(train_split))
    # The vision encoder's first blocks stay frozen, so their output for each picture is computed
    # once here instead of at every step: on a CPU that is most of a step's work.
    first_trained = num_blocks - vision_blocks
    features = frozen_features(model, pictures, first_trained, str(train_split))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    settings = {"base": str(base), "base_fingerprint": vlm.fingerprint, "train_split": str(train_split),
                "valid_split": str(valid_split), "data_dir": str(data_dir), "max_steps": max_steps,
                "batch_size": batch_size, "learning_rate": learning_rate, "lora_rank": lora_rank,
                "vision_blocks": vision_blocks, "seed": seed,
                "eval_every": eval_every, "eval_samples": eval_samples,
                "trainable_parameters": sum(p.numel() for p in params)}
    print(f"fine-tuning {settings['trainable_parameters']:,} parameters for {max_steps} steps -> {out}")

    log = TrainingLog("per_family", "valid accuracy", yscale="log")
    bar = tqdm(range(max_steps), desc="finetune", unit="step")
    for step in bar:
        # 1. learning rate first, so this step already uses it: a short warm-up (the new LoRA and
        #    embeddings start far from where they end), then cosine to a tenth
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, max_steps, learning_rate, min(100, max_steps // 10 + 1), final=0.1)
        # 2. batch: it depends only on (seed, step), so a run can be repeated exactly
        rng = np.random.default_rng([seed, step])
        items = [train_set[i] for i in rng.choice(len(train_set), min(batch_size, len(train_set)), replace=False)]
        model.train()
        # 3. forward/backward on this batch alone (zero_grad), clip so one spike cannot wreck the weights, then step
        # BEGIN SOLUTION (hint: build ids/mask/labels with text_batch, run the model on the pictures, backprop the loss)
        ids, mask, labels = text_batch(tok, [it["question"] for it in items], [it["answer"] for it in items])
        rows = [pictures.index[it["image_path"]] for it in items]
        vision = model.vision(features[rows].float(), start=first_trained)  # (B, N, C) through the trained blocks
        loss = model(vision_features=vision, input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # END SOLUTION
        # 4. log: the bar, and every 20 steps the mean of the last 20 losses in the history
        log.step(step, max_steps, loss=loss.item())
        bar.set_postfix(loss=f"{log.mean():.3f}", best=f"{max(log.best, 0):.3f}")
        # 5. evaluate every EVAL_EVERY steps; 6. keep the checkpoint if it is the best so far; 7. log
        if (step + 1) % eval_every == 0 or step + 1 == max_steps:
            model.eval()
            result = benchmark(vlm, valid_set, batch_size=100, progress=False)
            if log.evaluation(step, result.accuracy, result.per_family):
                save_adapter(model, out)
                tok.save_pretrained(out)
                write_record(out, "vlm", {**settings, "best_step": step + 1, "best_valid_accuracy": log.best,
                                          "seconds": log.seconds()})
            log.write(out)
            tqdm.write(f"step {step + 1}: valid accuracy {result.accuracy:.4f} "
                       + " ".join(f"{f}={a:.2f}" for f, a in result.per_family.items()))
    print(f"best valid accuracy {log.best:.4f}; checkpoint in {out} ({log.seconds():.0f} s)")


def test(checkpoint: str = str(REFERENCE_DIR), split: str = "valid", data_dir: str = "data",
         max_samples: int | None = None, batch_size: int = 100) -> None:
    """Accuracy of a fine-tuned checkpoint per question family; the last line is `accuracy=...`.

    Args:
        checkpoint: checkpoint directory (default: homework/checkpoints/vlm, what load_vlm() reads).
        split: split whose *_qa_pairs.json are asked (balanced_qa_pairs.json made on the spot if it has none).
        data_dir: root folder of the data.
        max_samples: ask only the first N questions.
        batch_size: questions per call of answer().
    """
    from homework.data import VQADataset, benchmark

    if max_samples is not None:
        max_samples = check_int("max_samples", max_samples, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    vlm = load_finetuned(str(checkpoint))
    try:
        result = benchmark(vlm, VQADataset(str(split), data_dir=str(data_dir)), max_samples=max_samples,
                           batch_size=batch_size)
    except ValueError as e:  # an unreadable picture
        fail(str(e))
    print(result.table())
    print(f"accuracy={result.accuracy:.4f}")


def demo_train(output_dir: str = "runs/demo", max_steps: int = 60, learning_rate: float = 3e-3, seed: int = 0,
               threads: int = 0, overwrite: bool = True) -> None:
    """Train for a minute on the committed data/train_demo split, to show the loop works.

    Args:
        output_dir: checkpoint directory.
        max_steps: optimisation steps.
        learning_rate: peak AdamW learning rate.
        seed: seed of the adapter's initialisation and of the batches.
        threads: torch CPU threads (0: torch's default).
        overwrite: replace OUTPUT_DIR (on by default: the demo's output is throwaway).
    """
    max_steps = check_int("max_steps", max_steps, 1)
    train(output_dir=output_dir, train_split="train_demo", valid_split="train_demo", max_steps=max_steps,
          batch_size=16, learning_rate=learning_rate, eval_every=max_steps, eval_samples=100, seed=seed,
          threads=threads, overwrite=overwrite)


if __name__ == "__main__":
    fire.Fire({"train": train, "test": test, "demo_train": demo_train})
