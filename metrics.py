"""Per-class results of a classifier: per-class and mean-class accuracy, the confusion matrix, its picture.

    results.update(metrics.class_metrics(predictions, labels, num_classes, metrics.class_names("ntu60")))
    metrics.plot_confusion_matrix(results["confusion_matrix"], run_dir / "confusion_matrix.png",
                                  results.get("class_names"), title="linear probe, ntu60 cross_subject")

Pure functions of predicted and true labels (numpy, scikit-learn, matplotlib; no torch), so the linear
probe (argmax of its validation logits) and kNN (its predicted labels) report the same things.
Accuracies are in percent, like top1 in results.json. A class without validation samples has no
accuracy: it is reported as null (None) and left out of the mean, never counted as 0.

Class names are data: `class_names/` holds one plain text file per naming scheme (see its README.md).
"""
import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import confusion_matrix

import safe_io
from safe_io import DataFileError

CLASS_NAMES_DIR = Path(__file__).resolve().parent / "class_names"
# dataset -> (names file, how many of its lines): NTU RGB+D 60's actions are NTU-120's first 60.
# PKU-MMD II is missing on purpose (class_names/README.md says why).
CLASS_NAME_FILES = {"ntu60": ("ntu120.txt", 60), "ntu120": ("ntu120.txt", 120), "msr": ("msr_action3d.txt", 20)}

# Above these class counts the picture drops what would be unreadable: every tick label (class numbers;
# names are always drawn) and the value written in each cell.
MAX_NUMBERED_TICKS = 30
MAX_ANNOTATED_CLASSES = 20
MAX_TICK_NAME_LENGTH = 40


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

def _label_array(values, what, num_classes):
    """values (a sequence, numpy array or torch tensor on any device) as a 1-D integer array in 0..num_classes-1.

    scikit-learn's confusion_matrix silently drops samples whose label is not in `labels`, so a label
    out of range would vanish from the counts instead of failing: it is refused here.
    """
    if hasattr(values, "cpu"):  # a torch tensor, possibly on a GPU
        values = values.cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a non-empty 1-D array of integer labels, got shape {array.shape} "
                         f"dtype {array.dtype}")
    if array.min() < 0 or array.max() >= num_classes:
        outside = array[(array < 0) | (array >= num_classes)][0]
        raise ValueError(f"{what} must lie in 0..{num_classes - 1} ({num_classes} classes), found {outside}")
    return array


def per_class_accuracy(confusion):
    """Accuracy (%) of each true class (row) of a confusion matrix; None for a class without samples."""
    confusion = np.asarray(confusion)
    samples = confusion.sum(axis=1)
    correct = np.diag(confusion)
    return [100.0 * float(hits) / float(total) if total else None for hits, total in zip(correct, samples)]


def mean_class_accuracy(accuracies):
    """The mean of per-class accuracies over the classes that have samples; None if none has."""
    present = [accuracy for accuracy in accuracies if accuracy is not None]
    return float(np.mean(present)) if present else None


def class_metrics(predictions, labels, num_classes, class_names=None):
    """Per-class results as a JSON-ready dict to merge into results.json.

    predictions, labels: (N,) integer labels in 0..num_classes-1 (predicted, true). Returns
    per_class_top1 (list of num_classes accuracies in %, None for a class without samples),
    mean_class_top1 (their mean over the classes with samples), confusion_matrix (num_classes lists
    of num_classes ints: row = true class, column = predicted class; every class has a row, samples
    or not) and class_names when given (one per class).
    """
    predictions = _label_array(predictions, "predictions", num_classes)
    labels = _label_array(labels, "labels", num_classes)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    confusion = confusion_matrix(labels, predictions, labels=np.arange(num_classes))  # (true, predicted)
    accuracies = per_class_accuracy(confusion)
    result = {"per_class_top1": accuracies, "mean_class_top1": mean_class_accuracy(accuracies),
              "confusion_matrix": confusion.tolist()}
    if class_names is not None:
        result["class_names"] = list(class_names)
    return result


# ---------------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------------

def read_class_names(path, num_classes=None):
    """The names in a text file, one per line (line i names label i-1); with num_classes, exactly that many.

    An empty line, a repeated name or the wrong count is a DataFileError naming the file (and line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileError(f"{path}: cannot read class names ({error})") from None
    first_line_of = {}
    for number, name in enumerate((line.strip() for line in lines), start=1):
        if not name:
            raise DataFileError(f"{path}: line {number} is empty (one class name per line, no blank lines)")
        if name in first_line_of:
            raise DataFileError(f"{path}: line {number}: {name!r} repeats line {first_line_of[name]}")
        first_line_of[name] = number
    names = list(first_line_of)
    if num_classes is not None and len(names) != num_classes:
        raise DataFileError(f"{path}: {len(names)} class names, the dataset has {num_classes} classes")
    return names


def class_names(dataset):
    """The class names of a built-in dataset, in label order, or None where we have none (pku2, demo)."""
    if dataset not in CLASS_NAME_FILES:
        return None
    file_name, count = CLASS_NAME_FILES[dataset]
    return read_class_names(CLASS_NAMES_DIR / file_name)[:count]


# ---------------------------------------------------------------------------------------------
# The picture
# ---------------------------------------------------------------------------------------------

def write_atomic(path, data):
    """Write bytes so that `path` is either absent, the previous file or the complete new one, never partial."""
    safe_io.write_atomic(path, lambda f: f.write(data))


def _short(name):
    return name if len(name) <= MAX_TICK_NAME_LENGTH else name[:MAX_TICK_NAME_LENGTH - 3] + "..."


def plot_confusion_matrix(confusion, path, class_names=None, title=None):
    """Draw a confusion matrix (rows true, columns predicted) as a PNG at `path`, written atomically.

    Each row is normalised to the fractions of that true class predicted as each class, so rare and
    common classes read alike; a class without samples is a grey row. The figure grows with the class
    count (about 0.16 inch per class) so NTU-120 stays legible. Tick labels: the names when given
    (cut to 40 characters), class numbers up to 30 classes, a few numbers beyond; the value of each
    cell up to 20 classes. Rendered on matplotlib's Agg canvas through the Figure API (no display,
    no pyplot state).
    """
    confusion = np.asarray(confusion)
    num_classes = len(confusion)
    if confusion.shape != (num_classes, num_classes) or num_classes == 0:
        raise ValueError(f"a confusion matrix must be square and non-empty, got shape {confusion.shape}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    samples = confusion.sum(axis=1, keepdims=True)
    rates = np.where(samples > 0, confusion / np.maximum(samples, 1), np.nan)  # (true, predicted), rows sum to 1

    side = min(max(4.0, 0.16 * num_classes + 2.0), 24.0)  # inches
    if class_names is not None:  # room for the names on both axes
        side += 0.05 * max(len(_short(name)) for name in class_names)
    figure = Figure(figsize=(side + 1.0, side), dpi=150, layout="constrained")  # + 1 inch for the colour bar
    axes = figure.subplots()
    image = axes.imshow(rates, cmap=colormaps["Blues"].with_extremes(bad="lightgrey"), vmin=0.0, vmax=1.0,
                        interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.04, label="fraction of the true class")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)

    font_size = 8 if num_classes <= MAX_NUMBERED_TICKS else 7
    if class_names is not None or num_classes <= MAX_NUMBERED_TICKS:
        ticks = np.arange(num_classes)
        labels = [_short(name) for name in class_names] if class_names is not None else [str(i) for i in ticks]
        axes.set_xticks(ticks, labels, rotation=90, fontsize=font_size)
        axes.set_yticks(ticks, labels, fontsize=font_size)
    else:
        for axis in (axes.xaxis, axes.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    if num_classes <= MAX_ANNOTATED_CLASSES:
        for (row, column), rate in np.ndenumerate(rates):
            if rate > 0:
                axes.text(column, row, f"{rate:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if rate > 0.5 else "black")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
