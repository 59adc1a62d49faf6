"""Checks of numeric flag values, run by argparse as it reads each flag.

A bad value stops the command while its arguments are parsed, before any file is opened, with one
message format under the usage line: `--save-freq must be at least 1, got 0` (the flag as typed).

    group.add_argument("--save-freq", type=int, default=50, action=checked(at_least(1)))

A rule is a small pure function: the value -> None when it is fine, else what it must be ("must be
at least 1"). Defaults are not checked (they are ours); every value given on the command line is,
each element of a list flag (nargs) separately. Checks that relate two flags or a flag and the data
(e.g. --num-head and --hidden-size, --knn-neighbours and the training samples) live where both are
known, with the same message format.
"""
import argparse
import functools
import math


def at_least(minimum):
    """Integers and floats >= minimum (NaN fails)."""
    def rule(value):
        return None if value >= minimum else f"must be at least {minimum}"
    return rule


def between(low, high):
    """low <= value <= high."""
    def rule(value):
        return None if low <= value <= high else f"must be between {low} and {high}"
    return rule


def positive_finite(value):
    """A float > 0 and not infinite, e.g. a t-SNE perplexity."""
    return None if value > 0 and math.isfinite(value) else "must be a positive finite number"


def non_negative_finite(value):
    """A float >= 0 and not infinite, e.g. a learning rate (0 freezes the weights) or a weight decay."""
    return None if value >= 0 and math.isfinite(value) else "must be a finite number at least 0"


def fraction(value):
    """0 < value <= 1."""
    return None if 0 < value <= 1 else "must be in (0, 1]"


# torch.manual_seed takes at most 64 bits and numpy's generators no negative seeds.
seed = between(0, 2**63 - 1)


class Checked(argparse.Action):
    """Stores a flag's value once its rule accepts it (each element of a list flag); else parser.error."""

    def __init__(self, option_strings, dest, rule, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.rule = rule

    def __call__(self, parser, namespace, values, option_string=None):
        for value in values if isinstance(values, list) else [values]:
            problem = self.rule(value)
            if problem is not None:
                parser.error(f"{option_string} {problem}, got {value}")
        setattr(namespace, self.dest, values)


def checked(rule):
    """The `action=` of a flag whose values `rule` must accept."""
    return functools.partial(Checked, rule=rule)
