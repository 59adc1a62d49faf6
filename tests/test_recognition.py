"""action_recognition.py on tiny data: linear probe, fine-tuning, label subsets, transfer, failures."""
import json
import re

import numpy as np
import pytest
import torch
from test_pretrain import make_demo_data

import action_recognition
import pretrain
import utils
from checkpoint import CheckpointMismatch, read_checkpoint
from dataset import write_split
from options.downstream import build_recognition_parser, build_retrieval_parser, build_tsne_parser
from options.pretrain import build_parser as build_pretrain_parser
from umurl import DownstreamModel, UmURLConfig

# No size flags: the encoder's sizes come from the checkpoint (its model_config, hidden size 16).
TINY = ["--device", "cpu", "--workers", "0"]
RESULT = re.compile(r"^RESULT (\w+) best_top1=(\d+\.\d\d) best_top5=(\d+\.\d\d) best_epoch=(\d+) "
                    r"final_top1=(\d+\.\d\d) final_top5=(\d+\.\d\d) "
                    r"dataset=(\w+) protocol=(\w+) modalities=([\w+]+) label_fraction=([\d.]+)$")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    # 24 training samples, 6 of each of 4 classes; 8 validation samples.
    return make_demo_data(tmp_path_factory.mktemp("data"), num_train=24, num_val=8)


@pytest.fixture(scope="module")
def pretrained(data_root, tmp_path_factory):
    """checkpoint_0000.pth.tar of a one-epoch pretrain.py run (unprefixed keys, as we write them)."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    pretrain.main(build_pretrain_parser().parse_args(
        ["--hidden-size", "16", "--projector-dim", "32", "--pre-dataset", "demo", "--device", "cpu", "--workers", "0",
         "--epochs", "1", "--batch-size", "8", "--data-root", str(data_root), "--checkpoint-path", str(run_dir)]))
    return run_dir / "checkpoint_0000.pth.tar"


def probe_args(data_root, run_dir, pretrained=None, *extra, dataset="demo"):
    flags = [*TINY, "--finetune-dataset", dataset, "--data-root", str(data_root), "--checkpoint-path", str(run_dir)]
    if pretrained is not None:
        flags += ["--pretrained", str(pretrained)]
    return build_recognition_parser().parse_args([*flags, *extra])


def backbone_of(path):
    state_dict = read_checkpoint(path)["state_dict"]
    return {key.removeprefix("module.backbone.").removeprefix("backbone."): value
            for key, value in state_dict.items() if "backbone." in key}


def test_pretrain_checkpoint_is_probed_end_to_end_with_the_released_settings(data_root, pretrained, tmp_path, capsys):
    run_dir = tmp_path / "linear"
    results = action_recognition.main(probe_args(data_root, run_dir, pretrained, "--epochs", "6", "--batch-size", "8"))
    out = capsys.readouterr().out
    assert "features cached" in out and "sanity check passed" in out
    match = RESULT.match(out.strip().splitlines()[-1])
    assert match, out.strip().splitlines()[-1]
    assert match.group(1) == "linear" and match.group(7, 8, 9, 10) == ("demo", "cross_subject", "joint+bone+motion",
                                                                       "1")
    # The released figure, "Final best accuracy", leads; the last epoch's stays beside it, labelled.
    assert float(match.group(2)) == pytest.approx(results["best_top1"], abs=0.005)
    assert float(match.group(5)) == pytest.approx(results["final_top1"], abs=0.005)
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert (config["lr"], config["schedule"], config["weight_decay"], config["mode"]) == (0.03, [120, 140], 0.0,
                                                                                          "linear")
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log if "val_top1" in record] == [4, 5]  # every 5 epochs and the last
    evaluated = [record for record in log if "val_top1" in record]
    assert results["best_top1"] == max(record["val_top1"] for record in evaluated)
    assert results["final_top1"] == evaluated[-1]["val_top1"]
    best = next(record for record in evaluated if record["val_top1"] == results["best_top1"])
    assert (results["best_epoch"], results["best_top5"]) == (best["epoch"], best["val_top5"])
    assert any((run_dir / "tensorboard").iterdir())
    # Per class: the best evaluation's 8 validation predictions, which add up to best_top1.
    assert results["per_class_evaluation"] == {"split": "val", "epoch": results["best_epoch"]}
    confusion = np.array(results["confusion_matrix"])
    assert confusion.shape == (4, 4) and confusion.sum() == 8 and confusion.sum(axis=1).tolist() == [2, 2, 2, 2]
    assert 100.0 * np.trace(confusion) / 8 == pytest.approx(results["best_top1"])
    assert results["per_class_top1"] == pytest.approx((100.0 * np.diag(confusion) / 2).tolist())
    assert results["mean_class_top1"] == pytest.approx(np.mean(results["per_class_top1"]))
    assert "class_names" not in results  # the demo data has none
    assert (run_dir / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_per_class_results_come_from_the_best_evaluation_not_the_last(data_root, pretrained, tmp_path, monkeypatch):
    # Scripted validation outcomes of three evaluations: the best (epoch 1) is neither the first nor the last.
    labels = torch.arange(8) % 4  # the demo validation labels
    outcomes = iter([torch.tensor([0, 1, 2, 3, 3, 3, 3, 3]),   # 62.5%
                     torch.tensor([0, 1, 2, 3, 0, 1, 2, 2]),   # 87.5%: one sample of class 3 taken for 2
                     torch.zeros(8, dtype=torch.int64)])       # 25%
    def scripted_evaluate(model, batches, device, amp_dtype, *, from_features):
        predictions = next(outcomes)
        top1 = 100.0 * (predictions == labels).double().mean().item()
        return {"loss": 1.0, "top1": top1, "top5": 100.0}, (predictions, labels)

    monkeypatch.setattr(action_recognition, "evaluate", scripted_evaluate)
    run_dir = tmp_path / "linear"
    results = action_recognition.main(probe_args(data_root, run_dir, pretrained, "--epochs", "3", "--eval-freq", "1",
                                                 "--batch-size", "8"))
    assert (results["best_epoch"], results["best_top1"], results["final_top1"]) == (1, 87.5, 25.0)
    assert results["per_class_evaluation"] == {"split": "val", "epoch": 1}
    assert results["confusion_matrix"] == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 1, 1]]
    assert results["per_class_top1"] == [100.0, 100.0, 100.0, 50.0] and results["mean_class_top1"] == 87.5
    assert json.loads((run_dir / "results.json").read_text())["confusion_matrix"] == results["confusion_matrix"]


def test_linear_probe_leaves_every_encoder_tensor_bitwise_unchanged(data_root, pretrained, tmp_path):
    # Re-encoding every batch, with a large lr: any gradient or update reaching the encoder would show.
    run_dir = tmp_path / "linear"
    action_recognition.main(probe_args(data_root, run_dir, pretrained, "--no-cache-features", "--epochs", "2",
                                       "--batch-size", "8", "--lr", "1.0"))
    before, after = backbone_of(pretrained), backbone_of(run_dir / "model_final.pth.tar")
    assert before.keys() == after.keys() and len(before) > 0
    assert all(torch.equal(before[key], after[key]) for key in before)  # parameters and buffers
    trained = read_checkpoint(run_dir / "model_final.pth.tar")["state_dict"]
    assert trained["fc.bias"].abs().sum() > 0  # the classifier did train


def test_sanity_check_names_any_changed_encoder_tensor():
    model = DownstreamModel(UmURLConfig(hidden_size=16), 4)
    snapshot = action_recognition.encoder_snapshot(model)
    action_recognition.check_encoder_unchanged(model, snapshot)
    with torch.no_grad():
        model.backbone.ma_encoder.pe.pe[0, 0, 0] += 1e-6  # a buffer
    with pytest.raises(RuntimeError, match=r"ma_encoder\.pe\.pe"):
        action_recognition.check_encoder_unchanged(model, snapshot)


def test_cached_features_and_re_encoding_train_the_same_classifier(data_root, pretrained, tmp_path):
    # A batch of 5 over 24 samples: uneven batches whose contents depend on the shuffle.
    common = ("--epochs", "5", "--batch-size", "5", "--seed", "3")
    cached = action_recognition.main(probe_args(data_root, tmp_path / "cached", pretrained, *common))
    encoded = action_recognition.main(probe_args(data_root, tmp_path / "encoded", pretrained, *common,
                                                 "--no-cache-features"))
    assert (cached["features"], encoded["features"]) == ("cached", "encoded per batch")
    for key in ("final_top1", "final_top5", "best_top1", "best_epoch"):
        assert cached[key] == encoded[key], key
    a = read_checkpoint(tmp_path / "cached" / "model_final.pth.tar")["state_dict"]
    b = read_checkpoint(tmp_path / "encoded" / "model_final.pth.tar")["state_dict"]
    assert torch.allclose(a["fc.weight"], b["fc.weight"], atol=1e-6)
    assert torch.allclose(a["fc.bias"], b["fc.bias"], atol=1e-6)


def test_epoch_batches_are_a_seeded_permutation_that_changes_every_epoch():
    batches = action_recognition.epoch_batches(23, 5, seed=1, epoch=0)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(23))
    again = action_recognition.epoch_batches(23, 5, seed=1, epoch=0)
    assert all(torch.equal(x, y) for x, y in zip(batches, again))
    assert not torch.equal(torch.cat(batches), torch.cat(action_recognition.epoch_batches(23, 5, seed=1, epoch=1)))
    assert not torch.equal(torch.cat(batches), torch.cat(action_recognition.epoch_batches(23, 5, seed=2, epoch=0)))


def test_label_subsets_are_reproducible_and_cover_every_class():
    # Unbalanced classes, one of them with a single sample.
    labels = np.repeat(np.arange(5), [200, 96, 37, 7, 1])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    subset = action_recognition.label_subset(labels, 0.1, seed=4)
    assert np.array_equal(subset, action_recognition.label_subset(labels, 0.1, seed=4))
    assert not np.array_equal(subset, action_recognition.label_subset(labels, 0.1, seed=5))
    assert np.array_equal(np.bincount(labels[subset]), [20, 10, 4, 1, 1])  # max(1, round(0.1 n)) per class
    assert len(np.unique(subset)) == len(subset) and np.all(np.diff(subset) > 0)
    assert np.array_equal(action_recognition.label_subset(labels, 1.0, seed=4), np.arange(len(labels)))


def test_semi_supervised_fine_tuning_trains_the_encoder_on_the_recorded_subset(data_root, pretrained, tmp_path,
                                                                               capsys):
    run_dir = tmp_path / "semi"
    results = action_recognition.main(probe_args(data_root, run_dir, pretrained, "--finetune", "--label-fraction",
                                                 "0.34", "--epochs", "2", "--seed", "1"))
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("RESULT semi best_top1=")
    record = json.loads((run_dir / "labelled_samples.json").read_text())
    assert record["per_class"] == {"0": 2, "1": 2, "2": 2, "3": 2} and len(record["names"]) == 8
    train_names = [f"S{i:03d}" for i in range(24)]
    expected = action_recognition.label_subset(np.arange(24) % 4, 0.34, seed=1)
    assert record["names"] == [train_names[i] for i in expected]
    assert results["train_samples"] == 8 and results["mode"] == "semi"
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert (config["lr"], config["batch_size"], config["weight_decay"]) == (0.01, 128, 1e-4)  # our fine-tuning
    before, after = backbone_of(pretrained), backbone_of(run_dir / "model_final.pth.tar")
    assert not torch.equal(before["j_emb.t_embedding.0.weight"], after["j_emb.t_embedding.0.weight"])


def test_released_layout_checkpoint_and_a_modality_subset(data_root, pretrained, tmp_path, capsys):
    checkpoint = read_checkpoint(pretrained)
    released = tmp_path / "released.pth.tar"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in checkpoint["state_dict"].items()}}, released)
    ours = action_recognition.main(probe_args(data_root, tmp_path / "a", pretrained, "--epochs", "2"))
    # A released checkpoint records no sizes: they come from the flags (or the released defaults).
    theirs = action_recognition.main(probe_args(data_root, tmp_path / "b", released, "--epochs", "2",
                                                "--hidden-size", "16"))
    assert (ours["final_top1"], ours["final_top5"]) == (theirs["final_top1"], theirs["final_top5"])
    two = action_recognition.main(probe_args(data_root, tmp_path / "c", released, "--epochs", "2",
                                             "--modalities", "bone", "joint", "--hidden-size", "16"))
    assert two["modalities"] == ["joint", "bone"]  # canonical order
    assert "modalities=joint+bone" in capsys.readouterr().out.strip().splitlines()[-1]


def test_our_checkpoint_is_evaluated_with_the_sizes_it_records(data_root, pretrained, tmp_path):
    assert read_checkpoint(pretrained)["model_config"] == UmURLConfig(hidden_size=16, projector_dim=32).to_dict()
    run_dir = tmp_path / "run"
    action_recognition.main(probe_args(data_root, run_dir, pretrained, "--epochs", "1"))  # no size flags
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["hidden_size"] is None and config["model_config"]["hidden_size"] == 16
    assert read_checkpoint(run_dir / "model_final.pth.tar")["model_config"] == config["model_config"]
    # A flag that agrees with the checkpoint is accepted.
    action_recognition.main(probe_args(data_root, tmp_path / "agrees", pretrained, "--epochs", "1",
                                       "--hidden-size", "16", "--num-layer", "1"))


def test_a_size_flag_contradicting_the_checkpoint_is_refused_naming_both_values(data_root, pretrained, tmp_path):
    args = probe_args(data_root, tmp_path / "run", pretrained, "--hidden-size", "8", "--num-head", "2")
    with pytest.raises(SystemExit) as error:
        action_recognition.main(args)
    message = str(error.value)
    assert message.startswith("--hidden-size 8 (the checkpoint's hidden_size is 16); --num-head 2 (the checkpoint's "
                              "num_head is 1): ") and str(pretrained) in message and "\n" not in message
    assert not (tmp_path / "run").exists()


def test_a_released_checkpoint_of_another_size_is_refused_naming_keys_and_sizes(data_root, pretrained, tmp_path):
    released = tmp_path / "released.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in read_checkpoint(pretrained)["state_dict"].items()}},
               released)
    args = probe_args(data_root, tmp_path / "run", released, "--hidden-size", "8")
    expected = r"(?s)wrong shape backbone\.j_emb\.t_embedding\.0\.weight.*records no model_config.*hidden_size=8"
    with pytest.raises(CheckpointMismatch, match=expected):
        action_recognition.main(args)


def write_split_pair(folder, num_joints, num_persons, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    for part, n in (("train", 12), ("val", 6)):
        data = rng.standard_normal((n, 3, 40, num_joints, num_persons)).astype(np.float32)
        write_split(folder, part, data, rng.integers(10, 40, n), [f"{part}{i}" for i in range(n)],
                    np.arange(n) % num_classes)


def test_transfer_probes_another_dataset_and_refuses_another_skeleton(pretrained, tmp_path, capsys):
    # NTU-layout demo pretraining -> PKU-MMD II (same 25 joints, 2 persons): a plain linear probe.
    write_split_pair(tmp_path / "data" / "PKU-MMD-II" / "xsub", 25, 2, num_classes=41)
    results = action_recognition.main(probe_args(tmp_path / "data", tmp_path / "pku", pretrained, "--epochs", "1",
                                                 dataset="pku2"))
    assert results["dataset"] == "pku2"
    assert "dataset=pku2" in capsys.readouterr().out.strip().splitlines()[-1]
    # MSR Action3D (20 joints, 1 person): refused from the checkpoint's model_config, in one line.
    write_split_pair(tmp_path / "data" / "MSR-Action3D" / "xsub", 20, 1, num_classes=20)
    with pytest.raises(CheckpointMismatch) as error:
        action_recognition.main(probe_args(tmp_path / "data", tmp_path / "msr", pretrained, dataset="msr"))
    assert str(error.value) == (
        f"{pretrained}: pretrained on ntu25 skeletons (25 joints, 2 persons, 3 coordinates, 64-frame views), but msr "
        f"cross_subject holds msr20 skeletons (20 joints, 1 person, 3 coordinates, 64-frame views): an encoder "
        f"transfers only between datasets of the same skeleton layout")
    assert not (tmp_path / "msr").exists()


def test_multi_process_launch_is_refused(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="runs in a single process"):
        action_recognition.main(probe_args(data_root, tmp_path / "b"))


@pytest.mark.parametrize("build", [build_recognition_parser, build_retrieval_parser, build_tsne_parser])
def test_evaluation_runs_in_fp32_by_default_even_on_cuda(build):
    # The released linear probe, kNN and feature extraction never autocast: on a CUDA device the
    # evaluation default is fp32, autocast only when asked for; pretraining keeps released fp16.
    cuda = torch.device("cuda")  # only the device choice is mocked: nothing runs on it
    args = build().parse_args([])
    assert utils.resolve_amp_dtype(cuda, args.amp, args.amp_dtype) is None
    asked = build().parse_args(["--amp"])
    assert utils.resolve_amp_dtype(cuda, asked.amp, asked.amp_dtype) == torch.float16
    assert "fp32" in build().format_help()
    pretraining = build_pretrain_parser().parse_args([])
    assert utils.resolve_amp_dtype(cuda, pretraining.amp, pretraining.amp_dtype) == torch.float16
