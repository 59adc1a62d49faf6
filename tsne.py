"""t-SNE plot of a pretrained (or random) UmURL encoder's features for a few random classes.

    python tsne.py --pretrained checkpoints/ntu60_cross_subject/checkpoint_0450.pth.tar \\
        --finetune-dataset ntu60 --protocol cross_subject --num-classes 10 --checkpoint-path runs/tsne_ntu60_xsub
    python tsne.py --finetune-dataset ntu60 --protocol cross_subject   # random weights, for comparison

--num-classes classes of --split are drawn with --seed; their samples (all, or --max-per-class of
each) are encoded, embedded in 2-D by sklearn's TSNE and drawn one colour per class into tsne.png in
the run folder (a folder holding an earlier run's results is refused unless --overwrite). Rendering
uses matplotlib's Agg canvas through the Figure API, so no display and no global pyplot state are
involved. One process on one device.
"""
from contextlib import ExitStack

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from torch.utils.data import Subset

import evaluation
import utils
from checkpoint import CheckpointError
from options.downstream import build_tsne_parser
from safe_io import DataFileError


def choose_samples(labels, num_classes, seed, max_per_class=None):
    """(classes, indices): `num_classes` random classes present in `labels` (sorted) and their samples.

    Asking for more classes than there are takes them all. With max_per_class, each class keeps at
    most that many samples, drawn at random. The same arguments always give the same choice.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    present = np.unique(labels)
    classes = np.sort(rng.choice(present, size=min(num_classes, len(present)), replace=False))
    indices = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if max_per_class is not None and len(members) > max_per_class:
            members = rng.choice(members, size=max_per_class, replace=False)
        indices.append(members)
    return classes, np.sort(np.concatenate(indices))


def embed_2d(features, perplexity, seed):
    """t-SNE of features (N, D) to (N, 2); perplexity capped below N, as TSNE requires."""
    perplexity = min(perplexity, max(1.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot(points, labels, path, title):
    """Scatter of points (N, 2), one colour per label, legend by class number, saved as a PNG."""
    figure = Figure(figsize=(7, 6), dpi=150)
    axes = figure.subplots()
    classes = np.unique(labels)
    # tab10's ten colours are the most distinct; tab20 (pairs of shades) only when more are needed.
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for position, label in enumerate(classes):
        selected = labels == label
        axes.scatter(points[selected, 0], points[selected, 1], s=6, color=palette(position % palette.N),
                     label=str(label))
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(title="class", fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, format="png")


@torch.no_grad()
def evaluate(model, dataset, batch_size, workers, device, amp_dtype, perplexity, seed, print_freq=10):
    """The 2-D t-SNE embedding (N, 2) of a dataset's features, and its labels (N,)."""
    features, labels = evaluation.extract_features(model, dataset, batch_size, workers, device, amp_dtype,
                                                   "features", print_freq)
    return embed_2d(features.cpu().numpy(), perplexity, seed), labels.cpu().numpy()


def main(args):
    with ExitStack() as train_log:  # the run folder's train.log, once the folder is ready
        device, amp_dtype = evaluation.device_and_precision("tsne.py", args)
        data = evaluation.load_splits(args)
        split = data.train if args.split == "train" else data.val
        classes, indices = choose_samples(split.labels, args.num_classes, args.seed, args.max_per_class)
        model, source = evaluation.load_encoder(args, data, device)
        # After the checkpoint was found usable: --overwrite then deletes the earlier results.
        run_dir, _ = evaluation.open_run_folder(args, train_log, device, amp_dtype, model.config,
                                                classes=classes.tolist(), samples=len(indices))
        utils.main_print(f"t-SNE of {len(indices)} {args.split} samples of classes {classes.tolist()}, "
                         f"{data.protocol.title}, modalities {'+'.join(model.modalities)}, {source}")

        points, labels = evaluate(model, Subset(split, indices.tolist()), args.batch_size, args.workers, device,
                                  amp_dtype, args.perplexity, args.seed, args.print_freq)
        path = run_dir / "tsne.png"
        title = (f"{data.protocol.title} {args.split}, {'+'.join(model.modalities)}: "
                 f"{args.pretrained.name if args.pretrained else 'random weights'}")
        plot(points, labels, path, title)
        evaluation.finish(run_dir, "tsne", {"mode": "tsne", "classes": classes.tolist(), "samples": len(indices),
                                            "png": str(path)},
                          {"png": path, "classes": classes.tolist(), "samples": len(indices), "dataset": args.dataset,
                           "protocol": args.protocol})


if __name__ == "__main__":
    try:
        main(build_tsne_parser().parse_args())
    except (DataFileError, CheckpointError) as error:
        # A bad data file or checkpoint: the message names the file and what is wrong, and a traceback
        # would only bury it (as in pretrain.py).
        raise SystemExit(f"error: {error}") from None
