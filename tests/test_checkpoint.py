"""homework/checkpoint.py: one way to write and open a checkpoint folder, with one-line errors."""

from __future__ import annotations

import json

import pytest

from homework import checkpoint as ck


def make(path, assignment="fusion", record=None, weights=("model.safetensors",), size=1000):
    path.mkdir(parents=True)
    for name in weights:
        (path / name).write_bytes(b"\0" * size)
    ck.write_record(path, assignment, record if record is not None else {"config": {"width": 8}})
    return path


def test_a_written_checkpoint_opens_with_its_record(tmp_path):
    path = make(tmp_path / "ok")
    text = (path / "config.json").read_text()
    assert text.startswith('{\n "assignment": "fusion"')
    assert ck.open_checkpoint(path, "fusion", ("model.safetensors",)) == {"assignment": "fusion", "config": {"width": 8}}


def test_a_missing_checkpoint_names_the_command_that_writes_that_path(tmp_path):
    with pytest.raises(SystemExit) as error:
        ck.open_checkpoint(tmp_path / "nope", "vlm")
    assert str(error.value) == (f"error: no fine-tuned VLM checkpoint in {tmp_path / 'nope'}; train one with "
                                f"`python -m homework.finetune train --output_dir {tmp_path / 'nope'}`")
    path = make(tmp_path / "half", weights=())
    with pytest.raises(SystemExit, match=r"no model.safetensors in .*half, so it is not a fusion checkpoint; "
                                         r"train one with `python -m homework.fusion train --output_dir"):
        ck.open_checkpoint(path, "fusion", ("model.safetensors",))


def test_another_assignments_checkpoint_is_refused(tmp_path):
    path = make(tmp_path / "cilp", assignment="cilp")
    with pytest.raises(SystemExit) as error:
        ck.open_checkpoint(path, "fusion", ("model.safetensors",))
    assert "holds a 'cilp' checkpoint, not a fusion one" in str(error.value) and "\n" not in str(error.value)


def test_another_assignments_folder_is_named_before_its_missing_files(tmp_path):
    """A CLIP folder opened as SimCLR's: its own files are missing, but the advice is not to train over it."""
    path = make(tmp_path / "clip", assignment="clip", weights=("adapter_model.safetensors",))
    with pytest.raises(SystemExit) as error:
        ck.open_checkpoint(path, "simclr", ("encoder.safetensors",))
    assert "holds a 'clip' checkpoint, not a SimCLR one" in str(error.value) and "--overwrite" not in str(error.value)
    for name in sorted(ck.LIMITS):  # every committed reference names its own assignment
        assert ck.recorded_assignment(ck.reference_dir(name)) == name, name


def test_a_record_without_an_assignment_is_the_callers(tmp_path):
    path = make(tmp_path / "old")
    (path / "config.json").write_text(json.dumps({"config": {}}))  # made before the key existed
    assert ck.open_checkpoint(path, "fusion", ("model.safetensors",)) == {"config": {}}
    (path / "config.json").write_text("{oops")
    with pytest.raises(SystemExit, match="config.json is not valid JSON"):
        ck.open_checkpoint(path, "fusion", ("model.safetensors",))


def test_a_checkpoint_over_its_size_limit_is_refused(tmp_path):
    limit = ck.LIMITS["fusion"].max_mb
    path = make(tmp_path / "big", size=int((limit + 0.5) * 2**20))
    with pytest.raises(SystemExit, match=rf"weighs {limit + 0.5:.1f} MB, over the {limit:g} MB limit of a fusion "
                                         r"checkpoint; try a smaller --width"):
        ck.open_checkpoint(path, "fusion", ("model.safetensors",))
    (path / "last.pt").write_bytes(b"\0" * 2**20)  # a resume state beside the weights does not count
    assert ck.check_size(make(tmp_path / "small"), "fusion", ("model.safetensors",)) < 0.01


def test_a_checkpoint_from_another_base_is_refused(tmp_path):
    ck.check_base(tmp_path, {"base_fingerprint": "ab" * 32}, "ab" * 32)
    with pytest.raises(SystemExit) as error:
        ck.check_base(tmp_path, {"base": "tiny", "base_fingerprint": "0" * 64}, "ab" * 32, verb="fine-tuned")
    assert "was fine-tuned on a base with fingerprint 000000000000, but base 'tiny' here has abababababab" in str(error.value)


def test_every_assignment_has_a_limit_and_a_reference_folder():
    assert set(ck.LIMITS) == {"vlm", "clip", "fusion", "cilp", "simclr", "robot"}
    for name in ck.LIMITS:
        assert ck.reference_dir(name).is_dir(), name  # the committed references


def test_a_record_builds_its_config_or_says_what_is_wrong(tmp_path):
    from homework.fusion import FusionConfig

    assert ck.config_from_record(FusionConfig, {"fusion": "concat", "width": 4}, tmp_path).width == 4
    with pytest.raises(SystemExit, match=r"config.json has unknown config fields \['depth'\]; it was made by another"):
        ck.config_from_record(FusionConfig, {"depth": 3}, tmp_path / "config.json")
    with pytest.raises(SystemExit, match="config.json: fusion must be one of"):
        ck.config_from_record(FusionConfig, {"fusion": "early"}, tmp_path / "config.json")


def test_weights_that_do_not_fit_the_model_are_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, tmp_path / "w.safetensors")
    module = ck.load_weights(torch.nn.Linear(3, 2), tmp_path / "w.safetensors")
    assert torch.equal(module.weight, torch.ones(2, 3))
    with pytest.raises(SystemExit, match=r"w.safetensors does not match its config \(missing \[\], unexpected"):
        ck.load_weights(torch.nn.Linear(3, 2, bias=False), tmp_path / "w.safetensors")
    both = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    state = {f"0.{k}": v for k, v in module.state_dict().items()}  # the second layer is held elsewhere
    with pytest.raises(SystemExit, match=r"missing \['1.weight'"):
        ck.load_weights(both, tmp_path / "w.safetensors", state)
    ck.load_weights(both, tmp_path / "w.safetensors", state, ignore_missing="1.")


def test_a_truncated_adapter_or_torch_state_is_one_line(tmp_path):
    """finetune test and clip test read their adapter (and CLIP its extra weights) through these."""
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, tmp_path / "adapter_model.safetensors")
    data = (tmp_path / "adapter_model.safetensors").read_bytes()
    (tmp_path / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match="is truncated or damaged") as e:
        ck.load_adapter(torch.nn.Linear(2, 2), tmp_path)
    assert "\n" not in str(e.value)
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "extra.pt")
    (tmp_path / "extra.pt").write_bytes((tmp_path / "extra.pt").read_bytes()[:200])
    with pytest.raises(SystemExit, match="is truncated or damaged"):
        ck.load_torch_state(tmp_path / "extra.pt")
