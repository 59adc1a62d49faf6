"""tsne.py: seeded choice of classes and samples, and a PNG written end to end."""
import json

import numpy as np
from conftest import make_demo_data

import tsne
from options.downstream import build_tsne_parser


def test_classes_and_samples_are_seeded_and_capped():
    labels = np.repeat(np.arange(12), 9)
    classes, indices = tsne.choose_samples(labels, 5, seed=0, max_per_class=4)
    again = tsne.choose_samples(labels, 5, seed=0, max_per_class=4)
    assert np.array_equal(classes, again[0]) and np.array_equal(indices, again[1])
    assert len(classes) == 5 and set(labels[indices]) == set(classes.tolist())
    assert np.array_equal(np.bincount(labels[indices], minlength=12)[classes], [4] * 5)
    assert not np.array_equal(classes, tsne.choose_samples(labels, 5, seed=1)[0])
    every, all_indices = tsne.choose_samples(labels, 50, seed=0)  # more classes than exist: all of them
    assert np.array_equal(every, np.arange(12)) and np.array_equal(all_indices, np.arange(len(labels)))


def test_tsne_of_random_weights_writes_a_png(tmp_path, capsys):
    data_root = make_demo_data(tmp_path / "data", num_train=8, num_val=16)
    run_dir = tmp_path / "tsne"
    tsne.main(build_tsne_parser().parse_args(
        ["--hidden-size", "16", "--device", "cpu", "--workers", "0", "--finetune-dataset", "demo", "--num-classes", "3",
         "--data-root", str(data_root), "--checkpoint-path", str(run_dir)]))
    assert (run_dir / "tsne.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["classes"]) == 3 and results["samples"] == 12  # 4 validation samples per class
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("RESULT tsne png=")
