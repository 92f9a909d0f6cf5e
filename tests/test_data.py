"""Datasets and the benchmark."""

from __future__ import annotations

import pytest

from homework.data import CaptionDataset, MultiChoiceQADataset, VQADataset, benchmark, normalize_answer


@pytest.mark.parametrize("a, b", [("Three.", "3"), ("  Front and LEFT ", "front and left"),
                                  ("sara_the_racer", "Sara the racer"), ("zero", "0")])
def test_normalize_answer(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_keeps_different_answers_apart():
    assert normalize_answer("front and left") != normalize_answer("front and right")
    assert normalize_answer("13") != normalize_answer("3")


def test_datasets_read_the_split(kart_data):
    vqa = VQADataset("tiny", data_dir=str(kart_data))
    item = vqa[0]
    assert set(item) == {"image_path", "question", "answer"} and item["image_path"].endswith("_im.jpg")
    assert len(VQADataset("tiny", data_dir=str(kart_data), max_samples=5)) == 5
    assert set(CaptionDataset("tiny", data_dir=str(kart_data))[0]) == {"image_path", "caption"}
    mc = MultiChoiceQADataset("tiny", data_dir=str(kart_data))[0]
    assert len(mc["candidates"]) == 5 and 0 <= mc["correct_index"] < 5


class Oracle:
    def __init__(self, dataset):
        self.truth = {(d["image_path"], d["question"]): d["answer"] for d in dataset}

    def answer(self, images, questions):
        return [self.truth[(i, q)].upper() + "." for i, q in zip(images, questions, strict=True)]


class AlwaysLeft:
    def answer(self, images, questions):
        return ["left"] * len(questions)


def test_benchmark_scores_answers(kart_data):
    ds = VQADataset("tiny", data_dir=str(kart_data))
    perfect = benchmark(Oracle(ds), ds, batch_size=7)
    assert perfect.accuracy == 1.0 and all(v == 1.0 for v in perfect.per_family.values())
    assert sum(perfect.counts.values()) == len(ds)
    poor = benchmark(AlwaysLeft(), ds, max_samples=40)
    assert len(poor.answers) == 40 and poor.accuracy < 0.5
    assert poor.per_family.get("ego", 0.0) == 0.0
    assert "accuracy" in poor.table()


def test_missing_known_split_is_made_on_the_spot(tmp_path):
    ds = VQADataset("train_demo", data_dir=str(tmp_path))
    assert len(ds) > 20 and (tmp_path / "train_demo" / "00000_00_im.jpg").is_file()


def test_missing_unknown_split_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no frames in"):
        VQADataset("holdout", data_dir=str(tmp_path))
