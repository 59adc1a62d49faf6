"""Command line of pretrain.py: the released flags and defaults, plus runtime and size options, and the
settings resolved from them once per run (the global batch, the view configuration, the loss weights)."""
import dataclasses
from pathlib import Path

import skeleton
from feeder.augmentations import RELEASED_VIEW
from options.checks import at_least, between, checked, non_negative_finite
from options.common import HelpFormatter, add_data_args, add_model_args, add_runtime_args, resolve_protocol
from options.parser import ArgumentParser
from options.released import PRETRAIN, add_retired_args
from umurl import RELEASED_LOSS_WEIGHTS, LossWeights


def build_parser():
    parser = ArgumentParser(
        description="UmURL self-supervised pretraining. Launch with torchrun for several processes.",
        epilog="exit codes: 0 done; 1 an error, a non-finite loss or state included (nothing non-finite is saved); "
               "2 a bad command line; 75 stopped by SIGTERM or SIGUSR1 after a step, with checkpoint_last.pth.tar "
               "written inside the epoch: run the same command to continue exactly",
        formatter_class=HelpFormatter)
    train = parser.add_argument_group("optimisation (released settings)")
    train.add_argument("--lr", "--learning-rate", type=float, default=5e-4, action=checked(non_negative_finite),
                       help="Adam learning rate (global, not per GPU)")
    train.add_argument("-b", "--batch-size", type=int, default=None, action=checked(at_least(1)),
                       help="global batch over all processes; each takes batch-size / world-size (default: the "
                            "protocol's, options/protocols.py, as released: 512 for NTU-60 x-sub, 1024 for NTU-60 "
                            "x-view and NTU-120; 512 elsewhere, dataset custom included)")
    train.add_argument("--epochs", type=int, default=451, action=checked(at_least(1)),
                       help="epochs to train, counted from 0")
    train.add_argument("--schedule", type=int, nargs="*", default=[351], action=checked(at_least(0)),
                       help="epochs at which lr is x0.1")
    train.add_argument("--cos", action="store_true", help="cosine lr schedule instead of --schedule")
    train.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-5,
                       action=checked(non_negative_finite), help="Adam weight decay")
    train.add_argument("--projector-dim", type=int, default=4096, action=checked(at_least(1)),
                       help="D, projector output width")
    train.add_argument("--min-crop-length", type=int, default=None,
                       action=checked(between(1, RELEASED_VIEW.out_frames)),
                       help="shortest temporal crop of a pretraining view, in frames (default: the dataset's, "
                            "options/protocols.py: 64 as released; 16 for MSR Action3D, whose sequences are "
                            "shorter; for custom, its metadata.json's); "
                            f"at most the {RELEASED_VIEW.out_frames} frames of a view. The other view settings are "
                            "the released ones (feeder/augmentations.py ViewConfig)")
    loss = parser.add_argument_group("loss weights (released: loss = 5 (intra + inter) + sum of 5 variance + "
                                     "1 covariance over the six projections)")
    loss.add_argument("--consistency-weight", type=float, default=RELEASED_LOSS_WEIGHTS.consistency,
                      action=checked(non_negative_finite), help="weight of the intra- plus inter-modal consistency")
    loss.add_argument("--variance-weight", type=float, default=RELEASED_LOSS_WEIGHTS.variance,
                      action=checked(non_negative_finite), help="weight of each projection's variance hinge")
    loss.add_argument("--covariance-weight", type=float, default=RELEASED_LOSS_WEIGHTS.covariance,
                      action=checked(non_negative_finite),
                      help="weight of each projection's off-diagonal covariance penalty")
    run = parser.add_argument_group("checkpoints")
    run.add_argument("--checkpoint-path", type=Path, default=Path("./checkpoints/pretrain"),
                     help="run folder: checkpoints, config.json, log.jsonl and TensorBoard logs")
    run.add_argument("--resume", type=Path, default=None,
                     help="checkpoint to start a new run folder from; a run folder that holds a state "
                          "(checkpoint_last.pth.tar) always continues from it, so the same command restarts safely")
    run.add_argument("--allow-config-change", action="store_true",
                     help="resume although a setting that changes the result (batch, lr, schedule, seed, sizes, "
                          "data...) differs from the checkpoint's; the change is recorded in resumes.jsonl")
    run.add_argument("--save-freq", type=int, default=50, action=checked(at_least(1)),
                     help="write checkpoint_{epoch:04d}.pth.tar when epoch %% save-freq == 0 and after the last")
    speed = parser.add_argument_group("speed (off by default: the released pipeline)")
    speed.add_argument("--augment-on-device", action="store_true",
                       help="the loader reads raw samples and the four views are drawn on the training device "
                            "(feeder/batch_augment.py): same augmentations, torch instead of numpy random streams")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the model (about a minute to compile; no faster on a CPU, see "
                            "benchmarks/README.md; try it on a GPU with `benchmarks/train_step.py --compile`)")
    add_data_args(parser, ("--pre-dataset",))
    add_model_args(parser)
    add_runtime_args(parser)
    add_retired_args(parser, PRETRAIN)
    return parser


def resolve_pretraining_settings(args):
    """Fill the settings left to the protocol: its name (options/common.py `resolve_protocol`) and the
    global batch of the released script for it."""
    protocol = resolve_protocol(args)
    if args.batch_size is None:
        args.batch_size = protocol.pretrain_batch_size
    return args


def view_config(args, protocol):
    """The run's ViewConfig, resolved once from the released settings, the protocol and the command line:
    the minimum crop is --min-crop-length, else the protocol's (a custom folder's metadata.json's); the
    corrupted joints are SPEC.md's 15 of
    NTU's 25, kept at the same share for other skeleton layouts (12 of MSR's 20)."""
    min_crop_length = protocol.min_crop_length if args.min_crop_length is None else args.min_crop_length
    num_corrupt = round(RELEASED_VIEW.num_corrupt * protocol.num_joints / skeleton.NTU_25.num_joints)
    return dataclasses.replace(RELEASED_VIEW, min_crop_length=min_crop_length, num_corrupt=num_corrupt)


def loss_weights(args):
    """The coefficients of umurl_loss: each LossWeights field from its flag, --<field>-weight."""
    return LossWeights(**{weight.name: getattr(args, f"{weight.name}_weight")
                          for weight in dataclasses.fields(LossWeights)})
