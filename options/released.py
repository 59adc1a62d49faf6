"""Flags of the released pretrain.py, action_recognition.py and action_retrieval.py that do nothing here.

They are accepted, so that the released command lines run unchanged, and each one given prints one
note saying what took its place (under torchrun, from the first process only). Their values are kept
in the namespace as `ignored_<name>`, so config.json records what was passed. Released flags that
still mean something are ordinary flags in options/: `--learning-rate` is `--lr`, and `--momentum`
sets the SGD momentum of action_recognition.py.
"""
import argparse
import os
from dataclasses import dataclass

# What replaced each released flag, and in brackets what the released code did with it.
_GPU = "choose GPUs with CUDA_VISIBLE_DEVICES (under torchrun each process takes the one of its LOCAL_RANK)"
_EVALUATION_GPU = "choose the GPU with CUDA_VISIBLE_DEVICES (the released scripts did; their code replaced --gpu by 0)"
_NO_TRAINING = "kNN retrieval trains nothing (unused in the released action_retrieval.py too)"


def _torchrun(variable):
    return f"torchrun sets it ({variable})"


@dataclass(frozen=True)
class RetiredFlag:
    flags: tuple  # the spellings, e.g. ("--local_rank", "--local-rank")
    note: str  # what replaced it
    nargs: object = None  # as released: "*" for --schedule


PRETRAIN = (
    RetiredFlag(("--gpu",), _GPU),
    RetiredFlag(("--world-size",), _torchrun("WORLD_SIZE") + "; --batch-size is the global batch over all processes"),
    RetiredFlag(("--rank",), _torchrun("RANK")),
    RetiredFlag(("--local_rank", "--local-rank"), _torchrun("LOCAL_RANK")),
    RetiredFlag(("--dist-url",), "torchrun's rendezvous replaces it (--standalone, or --rdzv-endpoint HOST:PORT)"),
    RetiredFlag(("--start-epoch",), "a run resumes at its checkpoint's epoch (--resume, or checkpoint_last.pth.tar "
                                    "in the run folder), else starts at 0"),
    RetiredFlag(("--momentum",), "Adam has no momentum (unused in the released pretrain.py too)"),
)

DOWNSTREAM = (
    RetiredFlag(("--gpu",), _EVALUATION_GPU),
    RetiredFlag(("--start-epoch",), "an evaluation always starts at epoch 0"),
    RetiredFlag(("--resume",), "evaluations are not resumed (the released ones never saved a checkpoint)"),
)

RECOGNITION = DOWNSTREAM + (
    RetiredFlag(("--finetune_skeleton_representation",), "use --modalities (unused in the released code too)"),
)

RETRIEVAL = DOWNSTREAM + (
    RetiredFlag(("--lr", "--learning-rate"), _NO_TRAINING),
    RetiredFlag(("--epochs",), _NO_TRAINING),
    RetiredFlag(("--schedule",), _NO_TRAINING, nargs="*"),
    RetiredFlag(("--momentum",), _NO_TRAINING),
    RetiredFlag(("--wd", "--weight-decay"), _NO_TRAINING),
)


def note(flag, retired):
    return f"note: {flag} does nothing here: {retired.note}"


class _Retired(argparse.Action):
    """Keeps the value and prints the flag's note the first time it is given."""

    def __init__(self, option_strings, dest, retired, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.retired = retired

    def __call__(self, parser, namespace, values, option_string=None):
        if not hasattr(namespace, self.dest) and os.environ.get("RANK", "0") == "0":
            print(note(self.retired.flags[0], self.retired), flush=True)
        setattr(namespace, self.dest, values)


def add_retired_args(parser, retired_flags):
    """Accept each of `retired_flags` (a tuple above) with any value; see the module docstring."""
    group = parser.add_argument_group("released flags that do nothing here (accepted, with a note)")
    for retired in retired_flags:
        name = retired.flags[0].lstrip("-").replace("-", "_")
        group.add_argument(*retired.flags, dest=f"ignored_{name}", action=_Retired, retired=retired,
                           nargs=retired.nargs, default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"released flag, ignored: {retired.note}")
    return group
