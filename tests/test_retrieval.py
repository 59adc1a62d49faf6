"""kNN retrieval: a toy set with a known answer, agreement with sklearn, and the script end to end."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier
from test_pretrain import make_demo_data

import action_retrieval
import evaluation
import metrics
from dataset import build_downstream_datasets, write_split
from options.downstream import build_retrieval_parser
from umurl import DownstreamModel, UmURLConfig


def unit_vectors(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return torch.tensor(np.stack([np.cos(radians), np.sin(radians)], axis=1), dtype=torch.float32)


def test_toy_set_with_a_known_answer():
    # Training samples on the unit circle; the query at 0 degrees sees them in the order
    # 5 (label 3), 10 (label 0), 20 (label 0), 40 (label 2), 60 (label 1), 100 (label 1).
    train = unit_vectors([100, 60, 40, 20, 10, 5])
    labels = torch.tensor([1, 1, 2, 0, 0, 3])
    query = unit_vectors([0, 101, 58])
    assert action_retrieval.knn_predict(train, labels, query, k=1).tolist() == [3, 1, 1]
    # k=3: two votes for 0 beat the single nearest 3.
    assert action_retrieval.knn_predict(train, labels, query[:1], k=3).tolist() == [0]
    # k=5: labels 3, 0, 0, 2, 1 -> 0 has the majority.
    assert action_retrieval.knn_predict(train, labels, query[:1], k=5).tolist() == [0]
    # Two votes each for 2 (the nearest) and 1: a tie goes to the smaller label, as in sklearn.
    tie_train, tie_labels = unit_vectors([5, 10, 20, 30]), torch.tensor([2, 1, 2, 1])
    assert action_retrieval.knn_predict(tie_train, tie_labels, query[:1], k=4).tolist() == [1]


@pytest.mark.parametrize("k", [1, 4, 5])
@pytest.mark.parametrize("chunk_size", [7, 1000])
def test_predictions_equal_sklearn_cosine_knn(k, chunk_size):
    rng = np.random.default_rng(k)
    # Few classes and even k: many tied votes, so the tie rule is exercised. Labels are not 0..C-1.
    train, query = rng.standard_normal((300, 12)), rng.standard_normal((97, 12))
    labels = rng.choice([1, 3, 4, 8], size=300)
    expected = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(train, labels).predict(query)
    ours = action_retrieval.knn_predict(F.normalize(torch.tensor(train), dim=1), torch.tensor(labels),
                                        F.normalize(torch.tensor(query), dim=1), k=k, chunk_size=chunk_size)
    assert np.array_equal(ours.numpy(), expected)
    if k == 4:  # the vote rule only matters on ties: check that there were some
        cosine = F.normalize(torch.tensor(query), dim=1) @ F.normalize(torch.tensor(train), dim=1).T
        nearest = cosine.topk(k, dim=1).indices.numpy()
        counts = np.sort([np.bincount(labels[row], minlength=9) for row in nearest], axis=1)
        assert (counts[:, -1] == counts[:, -2]).sum() >= 5


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("data"), num_train=24, num_val=10)


def retrieval_args(data_root, run_dir, *extra):
    return build_retrieval_parser().parse_args(
        ["--hidden-size", "16", "--device", "cpu", "--workers", "0", "--finetune-dataset", "demo",
         "--data-root", str(data_root), "--checkpoint-path", str(run_dir), *extra])


def test_script_matches_sklearn_on_the_encoder_features_and_prints_the_result_line(data_root, tmp_path, capsys):
    args = retrieval_args(data_root, tmp_path / "knn", "--knn-neighbours", "3", "--chunk-size", "4",
                          "--modalities", "motion", "--seed", "2")
    results = action_retrieval.main(args)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("RESULT knn top1=") and "k=3 dataset=demo protocol=cross_subject modalities=motion" in last
    assert json.loads((tmp_path / "knn" / "results.json").read_text())["top1"] == results["top1"]

    # The same (randomly initialised, seed 2) uni-modal encoder, features through sklearn.
    torch.manual_seed(2)
    model = DownstreamModel(UmURLConfig(hidden_size=16), 4, ["motion"])
    train, val = build_downstream_datasets(data_root, "demo", "cross_subject")
    device = torch.device("cpu")
    (xt, yt), (xv, yv) = (evaluation.extract_features(model, split, 8, 0, device, None) for split in (train, val))
    predicted = KNeighborsClassifier(n_neighbors=3, metric="cosine").fit(xt.numpy(), yt.numpy()).predict(xv.numpy())
    assert results["top1"] == pytest.approx(100.0 * np.mean(predicted == yv.numpy()))
    # Per class: the same predictions, class by class, in results.json and as a picture.
    expected = metrics.class_metrics(predicted, yv.numpy(), 4)
    saved = json.loads((tmp_path / "knn" / "results.json").read_text())
    assert saved["confusion_matrix"] == expected["confusion_matrix"]
    assert saved["per_class_top1"] == pytest.approx(expected["per_class_top1"])
    assert saved["mean_class_top1"] == pytest.approx(expected["mean_class_top1"])
    assert "class_names" not in saved  # the demo data has none
    assert (tmp_path / "knn" / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_dataset_with_class_names_has_them_in_results_json(tmp_path):
    # MSR Action3D: 20 named classes, one person of 20 joints.
    rng = np.random.default_rng(0)
    for part, n in (("train", 20), ("val", 10)):
        write_split(tmp_path / "data" / "MSR-Action3D" / "xsub", part,
                    rng.standard_normal((n, 3, 30, 20, 1)).astype(np.float32), np.full(n, 30),
                    [f"{part}{i}" for i in range(n)], np.arange(n) % 20)
    results = action_retrieval.main(build_retrieval_parser().parse_args(
        ["--hidden-size", "16", "--device", "cpu", "--workers", "0", "--finetune-dataset", "msr",
         "--data-root", str(tmp_path / "data"), "--checkpoint-path", str(tmp_path / "knn")]))
    assert results["class_names"] == metrics.class_names("msr") and len(results["class_names"]) == 20
    assert len(results["confusion_matrix"]) == 20 and len(results["per_class_top1"]) == 20
    assert results["per_class_top1"][10:] == [None] * 10  # classes without validation samples: no accuracy
    assert (tmp_path / "knn" / "confusion_matrix.png").is_file()


def test_an_earlier_confusion_matrix_is_an_earlier_result(data_root, tmp_path):
    # A folder holding only an earlier run's picture is refused, and --overwrite replaces it.
    run_dir = tmp_path / "knn"
    run_dir.mkdir()
    (run_dir / "confusion_matrix.png").write_bytes(b"an earlier run's picture")
    with pytest.raises(SystemExit, match="already holds an earlier run's confusion_matrix.png"):
        action_retrieval.main(retrieval_args(data_root, run_dir))
    action_retrieval.main(retrieval_args(data_root, run_dir, "--overwrite"))
    assert (run_dir / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")


def test_impossible_k_is_refused(data_root, tmp_path):
    with pytest.raises(SystemExit, match="--knn-neighbours must be between 1 and the 24"):
        action_retrieval.main(retrieval_args(data_root, tmp_path / "knn", "--knn-neighbours", "25"))
