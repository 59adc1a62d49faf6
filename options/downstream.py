"""Command lines of the evaluation scripts: action_recognition.py, action_retrieval.py, tsne.py and
export_features.py.

The released flag names are kept (`--finetune-dataset`, `--pretrained`, `--knn-neighbours`, ...);
data, model-size and runtime groups come from options/common.py, shared with pretrain.py. The size
flags default to None: the encoder's sizes are those its checkpoint records (evaluation.py).

The optimisation flags of action_recognition.py default to None and are filled by
`resolve_training_settings` from one of the two tables below, so that `--finetune` alone gives
sensible fine-tuning settings while the plain command gives the released linear probe.
"""
import argparse
from pathlib import Path

from data_gen.common import MAX_FRAMES
from options.checks import at_least, checked, fraction, non_negative_finite, positive_finite
from options.common import HelpFormatter, add_data_args, add_model_args, add_runtime_args
from options.parser import ArgumentParser
from options.released import RECOGNITION, RETRIEVAL, add_retired_args
from umurl import MODALITIES

# The released linear-evaluation protocol (SPEC.md, "Training and evaluation protocols").
LINEAR_PROBE = dict(lr=0.03, batch_size=512, epochs=150, schedule=[120, 140], weight_decay=0.0)
# Fine-tuning (full and semi-supervised): OUR choice, not released. SGD with momentum like the probe,
# a 3x smaller lr because the pretrained encoder moves too, light weight decay, and a smaller batch so
# that 1% of NTU-60 (~400 samples) still gives a few steps per epoch. Inputs are the un-augmented
# downstream views.
FINE_TUNING = dict(lr=0.01, batch_size=128, epochs=100, schedule=[80, 90], weight_decay=1e-4)
MOMENTUM = 0.9  # SGD momentum of both (released for the probe), the default of --momentum


def add_encoder_args(parser):
    """The encoder to evaluate: its checkpoint and which modalities feed it."""
    group = parser.add_argument_group("encoder")
    group.add_argument("--pretrained", type=Path, default=None,
                       help="pretraining checkpoint: ours (checkpoint_{epoch:04d}.pth.tar from pretrain.py, which "
                            "records the model sizes) or a released one (`module.` keys, sizes from the flags below); "
                            "default: a randomly initialised encoder (a baseline). Transfer = a checkpoint pretrained "
                            "on another dataset with the same skeleton layout")
    group.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES,
                       help="inputs to the encoder: all three = the fused multi-modal feature y_u; one = uni-modal")
    return group


def _common(parser, run_folder, contents):
    """The groups every evaluation script has, and its run folder (`contents`: what it receives)."""
    add_encoder_args(parser)
    add_data_args(parser, ("--finetune-dataset", "--dataset"))
    add_model_args(parser, evaluation=True)
    add_runtime_args(parser, evaluation=True)
    parser.add_argument("--checkpoint-path", type=Path, default=Path(run_folder), help=f"run folder: {contents}")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier run in --checkpoint-path (default: refuse a run "
                             "folder that holds them, so that two runs never mix)")


def _either(name, unit=""):
    return f"{unit}default: {LINEAR_PROBE[name]} (linear probe, released) or {FINE_TUNING[name]} (--finetune, ours)"


def build_recognition_parser():
    parser = ArgumentParser(
        description="Action recognition with a pretrained UmURL encoder: linear probe (released protocol), "
                    "fine-tuning and semi-supervised fine-tuning. One process, one device.",
        formatter_class=HelpFormatter)
    train = parser.add_argument_group("optimisation (SGD)")
    train.add_argument("--lr", "--learning-rate", type=float, default=None, action=checked(non_negative_finite),
                       help=_either("lr"))
    train.add_argument("-b", "--batch-size", type=int, default=None, action=checked(at_least(1)),
                       help=_either("batch_size", "samples per step, also for feature extraction; "))
    train.add_argument("--epochs", type=int, default=None, action=checked(at_least(1)), help=_either("epochs"))
    train.add_argument("--schedule", type=int, nargs="*", default=None, action=checked(at_least(0)),
                       help="epochs at which lr is x0.1; " + _either("schedule"))
    train.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=None,
                       action=checked(non_negative_finite), help=_either("weight_decay"))
    train.add_argument("--momentum", type=float, default=MOMENTUM, action=checked(non_negative_finite),
                       help="SGD momentum (released: 0.9)")
    train.add_argument("--eval-freq", type=int, default=5, action=checked(at_least(1)),
                       help="evaluate every this many epochs (and after the last)")
    mode = parser.add_argument_group("protocol")
    mode.add_argument("--finetune", action="store_true",
                      help="train the encoder too (train mode, our settings above); default: linear probe on the "
                           "frozen encoder in eval mode")
    mode.add_argument("--label-fraction", type=float, default=1.0, action=checked(fraction),
                      help="train on this fraction of the training labels, drawn per class with --seed (at least one "
                           "sample per class); e.g. 0.01 and 0.1 with --finetune for the semi-supervised protocol")
    mode.add_argument("--cache-features", action=argparse.BooleanOptionalAction, default=True,
                      help="linear probe: encode the training and validation sets once and train the classifier on "
                           "the stored features (the frozen encoder and un-augmented inputs make every epoch's "
                           "features identical); --no-cache-features re-encodes every batch of every epoch")
    _common(parser, "./checkpoints/action_recognition", "config.json, log.jsonl (one line per epoch), TensorBoard "
            "scalars, results.json, confusion_matrix.png, model_final.pth.tar and, with --label-fraction, "
            "labelled_samples.json")
    add_retired_args(parser, RECOGNITION)
    return parser


def resolve_training_settings(args):
    """Fill the optimisation flags left unset from LINEAR_PROBE or FINE_TUNING (given ones were checked by the
    parser, options/checks.py)."""
    table = FINE_TUNING if args.finetune else LINEAR_PROBE
    for name, value in table.items():
        if getattr(args, name) is None:
            setattr(args, name, list(value) if isinstance(value, list) else value)
    return args


def build_retrieval_parser():
    parser = ArgumentParser(
        description="kNN action retrieval: each validation sample takes the majority label of its k most "
                    "cosine-similar training samples (L2-normalised features). One process, one device.",
        formatter_class=HelpFormatter)
    knn = parser.add_argument_group("retrieval")
    knn.add_argument("--knn-neighbours", type=int, default=1, action=checked(at_least(1)),
                     help="k, neighbours that vote (released: 1)")
    knn.add_argument("--chunk-size", type=int, default=1024, action=checked(at_least(1)),
                     help="validation samples compared at once: memory is chunk-size x training samples floats")
    knn.add_argument("-b", "--batch-size", type=int, default=512, action=checked(at_least(1)),
                     help="feature-extraction batch")
    _common(parser, "./checkpoints/action_retrieval", "config.json, results.json and confusion_matrix.png")
    add_retired_args(parser, RETRIEVAL)
    return parser


def build_tsne_parser():
    parser = ArgumentParser(
        description="t-SNE plot (PNG) of the encoder's features for a few randomly chosen classes of one split.",
        formatter_class=HelpFormatter)
    plot = parser.add_argument_group("plot")
    plot.add_argument("--num-classes", type=int, default=10, action=checked(at_least(1)),
                      help="classes drawn at random (with --seed)")
    plot.add_argument("--split", default="val", choices=("train", "val"), help="which split's samples to embed")
    plot.add_argument("--max-per-class", type=int, default=None, action=checked(at_least(1)),
                      help="at most this many samples per class, drawn with --seed (default: all)")
    plot.add_argument("--perplexity", type=float, default=30.0, action=checked(positive_finite),
                      help="t-SNE perplexity (capped below the number of samples)")
    plot.add_argument("-b", "--batch-size", type=int, default=512, action=checked(at_least(1)),
                      help="feature-extraction batch")
    _common(parser, "./checkpoints/tsne", "config.json, tsne.png and results.json")
    return parser




def build_export_parser():
    parser = ArgumentParser(
        description="Write the encoder's feature (y_u, or the fused feature of --modalities) of every sample of a "
                    "prepared split, or of skeleton files embedded directly, with names and labels to one .npz "
                    "file. One process, one device, fp32 by default.",
        formatter_class=HelpFormatter)
    add_encoder_args(parser)
    data = add_data_args(parser, ("--finetune-dataset", "--dataset"))
    data.add_argument("--split", default="both", choices=("train", "val", "both"),
                      help="which split of the prepared dataset to export (both: train, then val)")
    files = parser.add_argument_group(
        "files to embed instead of a prepared dataset, with the converters' preprocessing")
    given = files.add_mutually_exclusive_group()
    given.add_argument("--skeleton", nargs="+", type=Path, metavar="FILE",
                       help="raw NTU RGB+D .skeleton files (read as data_gen/ntu_gendata.py reads them)")
    given.add_argument("--sequence", nargs="+", type=Path, metavar="FILE",
                       help="custom-format sequences (data_gen/custom_gendata.py): .npy arrays (T, V, C) or "
                            "(M, T, V, C), or .npz files of such arrays; needs --layout")
    files.add_argument("--layout", default=None,
                       help="the skeleton layout of --sequence: a layout file or a shipped layout's name (ntu25, "
                            "coco17, ...), the one the data was converted with")
    files.add_argument("--max-frames", type=int, default=MAX_FRAMES, action=checked(at_least(1)),
                       help="T_max the prepared data was converted with (the converters' --max-frames): a file is "
                            "padded to it, or resampled when longer, before the normalisation")
    add_model_args(parser, evaluation=True)
    add_runtime_args(parser, evaluation=True)
    parser.add_argument("-b", "--batch-size", type=int, default=512, action=checked(at_least(1)),
                        help="feature-extraction batch")
    parser.add_argument("--output", type=Path, required=True,
                        help="the .npz file to write: features float32 (N, 2H), names, labels, splits, metadata "
                             "(README, 'Exporting features')")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists (default: refuse)")
    return parser
