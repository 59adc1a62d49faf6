"""The argument parser of every command: argparse, with long flags accepted in both spellings.

The released tools spell some flags with underscores (`data_gen/ntu_gendata.py --data_path`) and
others with dashes (`pretrain.py --pre-dataset`); users copy commands from both, from papers and from
other code bases. Each flag is defined once, in one spelling; this parser also accepts the other
(`--out-folder` for `--out_folder`, `--batch_size` for `--batch-size`), so neither kind of command fails.
Help shows the defined spelling only.
"""
import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose long flags also answer to the other spelling (- vs _)."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        if "--" in args:  # what follows a bare -- is positional, whatever it looks like
            cut = args.index("--")
            args = [self.defined_spelling(token) for token in args[:cut]] + args[cut:]
        else:
            args = [self.defined_spelling(token) for token in args]
        return super().parse_known_args(args, namespace)

    def defined_spelling(self, token):
        """`--flag_name[=value]` -> the spelling this parser defines, when only the other one is defined."""
        if not token.startswith("--"):
            return token
        flag, equals, value = token.partition("=")
        if flag in self._option_string_actions:
            return token
        for other in ("--" + flag[2:].replace("_", "-"), "--" + flag[2:].replace("-", "_")):
            if other in self._option_string_actions:
                return other + equals + value
        return token
