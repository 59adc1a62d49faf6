"""Checkpoints: the released layout loads; misfits and code-carrying files are refused."""
import json
import os
import pickle
from dataclasses import replace

import pytest
import torch

from checkpoint import CheckpointError, load_encoder_weights, load_pretraining_weights, read_checkpoint, save_atomic
from umurl import DownstreamModel, UmURL, UmURLConfig

TINY = UmURLConfig(hidden_size=16, projector_dim=32)


@pytest.fixture(scope="module")
def released_checkpoint(fixtures_dir, tmp_path_factory):
    """A file with every key and shape of a released checkpoint (random values, default sizes)."""
    shapes = json.loads((fixtures_dir / "reference_checkpoint_keys.json").read_text())
    generator = torch.Generator().manual_seed(0)
    state_dict = {key: (torch.zeros(shape, dtype=torch.int64) if key.endswith("num_batches_tracked")
                        else torch.randn(shape, generator=generator)) for key, shape in shapes.items()}
    path = tmp_path_factory.mktemp("released") / "checkpoint_0450.pth.tar"
    torch.save({"epoch": 451, "state_dict": state_dict, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, state_dict


def test_released_checkpoint_loads_into_the_pretraining_model(released_checkpoint):
    path, state_dict = released_checkpoint
    model = UmURL(UmURLConfig())
    load_pretraining_weights(model, path)
    key = "backbone.ma_encoder.t_tr.layers.0.linear1.weight"
    assert torch.equal(model.state_dict()[key], state_dict["module." + key])
    assert torch.equal(model.j_projector[6].bias, state_dict["module.j_projector.6.bias"])


def test_released_checkpoint_loads_into_the_downstream_model(released_checkpoint):
    path, state_dict = released_checkpoint
    model = DownstreamModel(UmURLConfig(), 60)
    report = load_encoder_weights(model, path)
    assert report["missing"] == ["fc.bias", "fc.weight"]
    assert all(key.split(".")[0] in ("j_projector", "b_projector", "m_projector") for key in report["unexpected"])
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state_dict["module.backbone." + key]), key


def tiny_checkpoint(**overrides):
    torch.manual_seed(0)
    model = UmURL(replace(TINY, **overrides))
    return {"epoch": 1, "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}


def test_missing_encoder_key_is_refused_and_named():
    checkpoint = tiny_checkpoint()
    del checkpoint["state_dict"]["module.backbone.mm_fusion.s_fusion.0.weight"]
    for load, model in ((load_encoder_weights, DownstreamModel(TINY, 10)),
                        (load_pretraining_weights, UmURL(TINY))):
        with pytest.raises(CheckpointError, match=r"missing backbone\.mm_fusion\.s_fusion\.0\.weight"):
            load(model, checkpoint)


def test_wrong_shape_is_refused_and_named():
    checkpoint = tiny_checkpoint()
    checkpoint["state_dict"]["module.backbone.j_emb.t_embedding.0.weight"] = torch.zeros(16, 151)
    model = DownstreamModel(TINY, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"wrong shape backbone\.j_emb\.t_embedding\.0\.weight"):
        load_encoder_weights(model, checkpoint)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "nothing is loaded in part"


def test_a_different_model_size_names_the_mismatching_keys():
    with pytest.raises(CheckpointError, match="wrong shape") as error:
        load_encoder_weights(DownstreamModel(TINY, 10), tiny_checkpoint(hidden_size=8))
    assert "backbone.ma_encoder.pe.pe" in str(error.value)


def test_unexpected_keys_other_than_projectors_are_refused():
    checkpoint = tiny_checkpoint()
    checkpoint["state_dict"]["module.backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected backbone\.extra\.weight"):
        load_encoder_weights(DownstreamModel(TINY, 10), checkpoint)


def test_pretraining_model_needs_its_projectors():
    checkpoint = tiny_checkpoint()
    del checkpoint["state_dict"]["module.m_projector.6.bias"]
    with pytest.raises(CheckpointError, match=r"missing m_projector\.6\.bias"):
        load_pretraining_weights(UmURL(TINY), checkpoint)


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()
    # The probe is real: unpickling it without the restriction does run the code.
    pickle.loads(pickle.dumps(RunsCode(marker)))
    assert marker.exists()


def test_truncated_or_missing_files_give_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    save_atomic(tiny_checkpoint(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="the file was cut short"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "absent.pth.tar")


def test_save_atomic_round_trips_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "run" / "checkpoint_last.pth.tar"
    checkpoint = tiny_checkpoint()
    save_atomic(checkpoint, path)
    loaded = read_checkpoint(path)
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in checkpoint["state_dict"].items())
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pth.tar"
    save_atomic({"epoch": 1}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_the_model_config_round_trips_through_a_checkpoint_file(tmp_path):
    # Plain values only: the file loads with weights_only=True and gives back the same configuration.
    config = replace(TINY, layout="msr20", parents=tuple(range(20)), num_joints=20, num_persons=1, num_coords=2)
    path = tmp_path / "checkpoint_0000.pth.tar"
    save_atomic({"epoch": 1, "state_dict": UmURL(config).state_dict(), "model_config": config.to_dict()}, path)
    loaded = read_checkpoint(path)
    assert UmURLConfig.from_dict(loaded["model_config"]) == config
    load_pretraining_weights(UmURL(UmURLConfig.from_dict(loaded["model_config"])), loaded)
