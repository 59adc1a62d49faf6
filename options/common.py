"""Flag groups shared by the pretraining and the downstream parsers. Every flag is defined once."""
import argparse
from pathlib import Path

from feeder.augmentations import OUT_FRAMES
from options.checks import at_least, checked, seed
from options.protocols import CUSTOM, DATASETS, DEFAULT_DATA_ROOT, PROTOCOLS, get_protocol, protocols_of
from safe_io import DataFileError
from umurl import UmURLConfig, hidden_size_problem

RELEASED = UmURLConfig()  # the released model's sizes: the defaults of the size flags
SIZE_FLAGS = ("hidden_size", "num_head", "num_layer")  # what the encoder's size flags set


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the None of flags whose help already says what they resolve to."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_data_args(parser, dataset_flags):
    """--data-root, the dataset (under the released flag names, e.g. --pre-dataset) and --protocol."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                       help="folder holding the prepared datasets (e.g. NTU-RGB-D-60-AGCN/xsub below it); for "
                            "dataset custom the folder data_gen/custom_gendata.py wrote (its metadata.json gives the "
                            "skeleton, classes and protocol)")
    group.add_argument(*dataset_flags, dest="dataset", default="ntu60", choices=DATASETS,
                       help="which dataset (custom: your own, README 'Your own data')")
    per_dataset = "; ".join(f"{d}: {', '.join(protocols_of(d))}" for d in DATASETS if d != CUSTOM)
    names = sorted({p for _, p in PROTOCOLS} | set(protocols_of(CUSTOM)))
    group.add_argument("--protocol", default=None, choices=names,
                       help=f"evaluation protocol, checked against the dataset ({per_dataset}); default: "
                            f"cross_subject, or for custom the one its metadata.json names")
    return group


def resolve_protocol(args):
    """The Protocol (options/protocols.py) of the command line's dataset, --protocol and --data-root, with
    args.protocol set to its name (a dataset's default, or the custom folder's). The one place every script
    resolves it. Bad metadata is a DataFileError naming the file; a protocol the dataset lacks a SystemExit."""
    try:
        protocol = get_protocol(args.dataset, args.protocol, args.data_root)
    except DataFileError:
        raise
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    args.protocol = protocol.protocol
    return protocol


def add_model_args(parser, evaluation=False):
    """Encoder sizes; input sizes follow from the dataset. Pretraining's defaults are the released model's.

    evaluation: the sizes are the --pretrained checkpoint's (its model_config), so the flags default to
    None and are only needed for a checkpoint without one (a released checkpoint) or random weights.
    """
    if evaluation:
        group = parser.add_argument_group(
            "model size (default: the --pretrained checkpoint's; without a --pretrained checkpoint or for one that "
            f"does not record its sizes (a released one), the released model's: hidden {RELEASED.hidden_size}, "
            f"{RELEASED.num_head} head, {RELEASED.num_layer} layer)")
        defaults = dict.fromkeys(SIZE_FLAGS)
    else:
        group = parser.add_argument_group("model size (defaults: the released model)")
        defaults = {name: getattr(RELEASED, name) for name in SIZE_FLAGS}
    group.add_argument("--hidden-size", type=int, default=defaults["hidden_size"], action=checked(at_least(2)),
                       help="H, token width (even, a multiple of --num-head)")
    group.add_argument("--num-head", type=int, default=defaults["num_head"], action=checked(at_least(1)),
                       help="attention heads")
    group.add_argument("--num-layer", type=int, default=defaults["num_layer"], action=checked(at_least(1)),
                       help="layers per stream")
    return group


def add_runtime_args(parser, default_workers=8, evaluation=False):
    """Device, precision, data loading, seeding and logging.

    evaluation: the released linear probe, kNN and feature extraction run in fp32 everywhere, so
    there --amp is off by default; released pretraining uses fp16 autocast on CUDA.
    """
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="auto: this process's GPU if there is one, else the CPU")
    if evaluation:
        group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                           help="autocast mixed precision for feature extraction and training (default: off, fp32 "
                                "on every device as released; the figures to compare with the paper are fp32 ones)")
    else:
        group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                           help="autocast mixed precision (default: on for CUDA as released, off on the CPU)")
    group.add_argument("--amp-dtype", default="auto", choices=("auto", "fp16", "bf16"),
                       help="autocast dtype: auto = fp16 on CUDA, bf16 on the CPU; fp16 always comes with "
                            "gradient scaling (on the CPU too, where it runs the CUDA recipe for testing)")
    group.add_argument("-j", "--workers", type=int, default=default_workers, action=checked(at_least(0)),
                       help="DataLoader worker processes per training process")
    group.add_argument("--seed", type=int, default=0, action=checked(seed),
                       help="seeds weights, augmentations and data order (pretraining's sample order is the "
                            "released one, seed 0, whatever this says)")
    group.add_argument("-p", "--print-freq", type=int, default=10, action=checked(at_least(1)),
                       help="progress-bar refresh, in steps")
    return group


def check_model_sizes(hidden_size, num_head):
    """What is wrong with --hidden-size for --num-head, or None (the rule is umurl.hidden_size_problem's)."""
    return hidden_size_problem(hidden_size, num_head, names=("--hidden-size", "--num-head"))


def size_flags(args):
    """The size flags given on the command line ({name: value}); those left at None are not."""
    names = (*SIZE_FLAGS, "projector_dim")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def model_config(skeleton, **sizes):
    """The UmURLConfig of a skeleton (layout, persons, coordinates; 64-frame views) with `sizes` (hidden_size,
    num_head, num_layer, projector_dim); a size not given is the released model's. `skeleton` is a protocol
    of options/protocols.py or a layout file's skeleton.SkeletonLayout: both name their topology, persons
    and coordinates.
    A hidden size that does not split over the heads is a SystemExit naming the flags."""
    problem = check_model_sizes(sizes.get("hidden_size", RELEASED.hidden_size),
                                sizes.get("num_head", RELEASED.num_head))
    if problem is not None:
        raise SystemExit(problem)
    topology = skeleton.topology
    return UmURLConfig(layout=topology.name, parents=topology.parents, num_joints=topology.num_joints,
                       num_persons=skeleton.num_persons, num_coords=skeleton.num_coords, num_frames=OUT_FRAMES,
                       **sizes)
