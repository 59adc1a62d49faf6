"""Flag groups shared by the pretraining and the downstream parsers. Every flag is defined once."""
import argparse
from pathlib import Path

from options.checks import at_least, checked, seed
from options.protocols import DATASETS, DEFAULT_DATA_ROOT, PROTOCOLS, protocols_of
from umurl import DEFAULT_SIZES


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the None of flags whose help already says what they resolve to."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_data_args(parser, dataset_flags):
    """--data-root, the dataset (under the released flag names, e.g. --pre-dataset) and --protocol."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                       help="folder holding the prepared datasets (e.g. NTU-RGB-D-60-AGCN/xsub below it)")
    group.add_argument(*dataset_flags, dest="dataset", default="ntu60", choices=DATASETS, help="which dataset")
    per_dataset = "; ".join(f"{d}: {', '.join(protocols_of(d))}" for d in DATASETS)
    group.add_argument("--protocol", default="cross_subject", choices=sorted({p for _, p in PROTOCOLS}),
                       help=f"evaluation protocol, checked against the dataset ({per_dataset})")
    return group


def add_model_args(parser):
    """Encoder sizes; the defaults are the released model's. Input sizes follow from the dataset."""
    group = parser.add_argument_group("model size (defaults: the released model)")
    group.add_argument("--hidden-size", type=int, default=DEFAULT_SIZES["hidden_size"], action=checked(at_least(2)),
                       help="H, token width (even, a multiple of --num-head)")
    group.add_argument("--num-head", type=int, default=DEFAULT_SIZES["num_head"], action=checked(at_least(1)),
                       help="attention heads")
    group.add_argument("--num-layer", type=int, default=DEFAULT_SIZES["num_layer"], action=checked(at_least(1)),
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
    """What is wrong with --hidden-size for --num-head, or None: attention splits H over the heads, and
    the sinusoidal position encoding pairs H's channels (sin, cos)."""
    if hidden_size % num_head or hidden_size % 2:
        return f"--hidden-size must be even and a multiple of --num-head ({num_head}), got {hidden_size}"
    return None


def model_sizes(args, protocol):
    """Keyword sizes for UmURL/DownstreamModel from the flags and the protocol's skeleton."""
    problem = check_model_sizes(args.hidden_size, args.num_head)
    if problem is not None:
        raise SystemExit(problem)
    return dict(t_input_size=protocol.t_input_size, s_input_size=protocol.s_input_size,
                hidden_size=args.hidden_size, num_head=args.num_head, num_layer=args.num_layer,
                parents=protocol.topology.parents)
