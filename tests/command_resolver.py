"""Stand-in for `python` and `torchrun` in tests/test_released_commands.py: instead of running the
script of a command line, print on one JSON line what that command line resolves to.

    command_resolver.py <launcher> [launcher options...] <script.py> [script arguments...]

The record holds the launcher and its options, the working directory, the script, and either
`resolved` (the script's options after parsing, with the defaults and tables applied as the script
applies them) or `error` (what the parser printed when it refused), plus the notes printed while
parsing (one per released flag that does nothing here).
"""
import contextlib
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from data_gen import ntu_gendata  # noqa: E402
from options.downstream import build_recognition_parser, build_retrieval_parser, resolve_training_settings  # noqa: E402
from options.pretrain import build_parser, resolve_pretraining_settings  # noqa: E402

# Each entry point -> how its main() turns the command line into settings.
RESOLVERS = {
    "pretrain.py": lambda argv: resolve_pretraining_settings(build_parser().parse_args(argv)),
    "action_recognition.py": lambda argv: resolve_training_settings(build_recognition_parser().parse_args(argv)),
    "action_retrieval.py": lambda argv: build_retrieval_parser().parse_args(argv),
    "ntu_gendata.py": lambda argv: ntu_gendata.resolve_paths(ntu_gendata.build_parser().parse_args(argv)),
}


def resolve_command(command):
    """[launcher, launcher options..., script.py, arguments...] -> the record described above."""
    launcher, *rest = command
    at = next(index for index, word in enumerate(rest) if word.endswith(".py"))
    script, arguments = rest[at], rest[at + 1:]
    record = {"launcher": Path(launcher).name, "launcher_options": rest[:at], "cwd": os.getcwd(),
              "script": Path(script).name, "arguments": arguments}
    printed, errors = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            resolved = vars(RESOLVERS[Path(script).name](arguments))
        record["resolved"] = json.loads(json.dumps(resolved, default=str))  # paths as strings, as in config.json
    except SystemExit as exit_:
        record["error"] = errors.getvalue().strip() or str(exit_)
    record["notes"] = printed.getvalue().splitlines()
    return record


if __name__ == "__main__":
    print(json.dumps(resolve_command(sys.argv[1:])), flush=True)
