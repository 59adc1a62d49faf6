"""Mean +- standard deviation of several evaluation runs, per setting: the figure to report over seeds.

    python scripts/aggregate_results.py runs/semi1_seed0 runs/semi1_seed1 runs/semi1_seed2
    python scripts/aggregate_results.py runs/                       # every results.json in or below runs/
    python scripts/aggregate_results.py 'runs/*/knn_*' --json summary.json

Arguments are run folders, results.json files, folders searched recursively, or glob patterns (quoted
ones are expanded here, `**` included). Each results.json written by action_recognition.py or
action_retrieval.py is one run; runs with the same setting form a group:
- the setting is every scalar entry of results.json except the metrics and what differs between runs
  of one setting by design: the checkpoint path (each seed pretrains its own), the seed, the best
  epoch, durations (`*_s`), sample counts and the feature mode (cached or not, same result). It always
  includes mode, dataset, protocol, modalities, label_fraction (recognition) and k (kNN) where present,
  and whether the encoder was pretrained or random weights. `--by KEY` adds an entry (e.g.
  `--by pretrained` to keep checkpoints apart), `--ignore KEY` removes one.
- the metrics are the numeric entries named like top1/top5 (best_top1, best_top5, final_top1,
  final_top5 of recognition, top1 of kNN, mean_class_top1 where present): mean, sample standard
  deviation (n - 1; '-' for a single run) and n.
The seed of each run (results.json, else the config.json beside it) is listed; the same seed twice in
one group is warned about, as it usually means one run was counted twice.

A results.json that cannot be read or parsed, is not a JSON object or holds a metric that is not a
finite number stops the script with one line naming the file; `--skip-bad` warns and leaves it out.
Files found by searching a folder that are not evaluation results (t-SNE runs, the real-data
benchmark's summary) are skipped with a note; named directly they are an error.
"""
import glob
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `import metrics`

from metrics import write_atomic  # noqa: E402
from options.parser import ArgumentParser  # noqa: E402

RESULTS_NAME = "results.json"
METRIC_PATTERN = re.compile(r"top\d+$")  # best_top1, final_top5, top1, mean_class_top1, ...
# Known metrics first, in this order; any other metric after them, by name.
METRIC_ORDER = ("best_top1", "best_top5", "final_top1", "final_top5", "top1", "top5", "mean_class_top1")
# Known setting entries first, in this order (encoder: derived from `pretrained`); any other after them.
SETTING_ORDER = ("mode", "dataset", "protocol", "modalities", "label_fraction", "k", "epochs", "encoder")
# Entries that differ between runs of one setting by design, and are not part of it.
PER_RUN = {"pretrained", "seed", "best_epoch", "features", "train_samples", "val_samples"}


class ResultsError(ValueError):
    """A results.json that cannot be used; the message starts with its path."""


class NotAnEvaluation(ResultsError):
    """A readable results.json of something other than an evaluation (no mode, or no accuracy in it)."""


@dataclass(frozen=True)
class Run:
    path: Path
    setting: tuple  # ((key, value), ...) in display order
    metrics: dict  # name -> float
    seed: object  # int, or None when unknown


# ---------------------------------------------------------------------------------------------
# Finding and reading the files
# ---------------------------------------------------------------------------------------------

def find_results(arguments):
    """[(path, named)] of every results.json the arguments point to, each once, in argument order.

    named: the file was given (or matched by a pattern) rather than found by searching a folder.
    An argument that points to nothing is a ResultsError.
    """
    found = {}
    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            found.setdefault(path.resolve(), (path, True))
        elif path.is_dir():
            below = sorted(path.rglob(RESULTS_NAME))
            if not below:
                raise ResultsError(f"{path}: no {RESULTS_NAME} in or below this folder")
            for file in below:
                found.setdefault(file.resolve(), (file, False))
        elif any(character in argument for character in "*?["):  # a pattern the shell left unexpanded
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise ResultsError(f"{argument}: the pattern matches nothing")
            for match in find_results(matches):
                found.setdefault(match[0].resolve(), match)
        else:
            raise ResultsError(f"{path}: no such file or folder")
    return list(found.values())


def read_json(path):
    """The JSON object in a file; ResultsError naming the file if it is unreadable, invalid or not an object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: cannot be read ({error})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                           f"was the run stopped while writing it?") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{path}: expected a JSON object of results, found a {type(record).__name__}")
    return record


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metrics_of(path, record):
    """{metric: value} of a results record; a metric that is not a finite number is a ResultsError."""
    found = {}
    for key, value in record.items():
        if not METRIC_PATTERN.search(key) or isinstance(value, (list, dict)):
            continue  # per_class_top1 is a list: the per-class detail, not a run's figure
        if not is_number(value) or not math.isfinite(value):
            raise ResultsError(f"{path}: {key} is {value!r}, not a finite number")
        found[key] = float(value)
    return found


def seed_of(path, record):
    """The run's seed: from results.json, else from the config.json beside it; None when neither says."""
    if "seed" in record:
        return record["seed"]
    try:
        return read_json(Path(path).with_name("config.json"))["config"]["seed"]
    except (ResultsError, KeyError, TypeError):
        return None


def display(value):
    """A setting value as one hashable scalar: lists joined with '+' (modalities), the rest unchanged."""
    return "+".join(map(str, value)) if isinstance(value, list) else value


def setting_of(record, by=(), ignore=()):
    """The run's setting: ((key, value), ...), known keys first (SETTING_ORDER), then the others by name."""
    setting = {}
    for key, value in record.items():
        if key in by or not (METRIC_PATTERN.search(key) or key in PER_RUN or key.endswith("_s")
                             or isinstance(value, dict) or (isinstance(value, list) and key != "modalities")):
            setting[key] = display(value)
    if "pretrained" in record and "pretrained" not in by:
        setting["encoder"] = "random" if record["pretrained"] in (None, "None", "") else "pretrained"
    for key in ignore:
        setting.pop(key, None)
    rank = {key: position for position, key in enumerate(SETTING_ORDER)}
    return tuple(sorted(setting.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def read_run(path, by=(), ignore=()):
    """One results.json as a Run; ResultsError (NotAnEvaluation if it is no evaluation) naming the file."""
    record = read_json(path)
    if "mode" not in record:
        raise NotAnEvaluation(f"{path}: no 'mode' entry: not written by action_recognition.py or "
                              f"action_retrieval.py")
    found = metrics_of(path, record)
    if not found:
        raise NotAnEvaluation(f"{path}: no accuracy in it (mode {record['mode']!r})")
    return Run(Path(path), setting_of(record, by, ignore), found, seed_of(path, record))


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def summarise(values):
    """mean, sample standard deviation (None for one value) and n of a list of numbers."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def metric_names(metric_dicts):
    """The metric names in any of the dicts, known ones first (METRIC_ORDER), then the others by name."""
    present = {name for metrics in metric_dicts for name in metrics}
    return [name for name in METRIC_ORDER if name in present] + sorted(present - set(METRIC_ORDER))


def aggregate(runs):
    """One summary per setting, in setting order: setting, runs, seeds, files, and each metric's summary."""
    groups = {}
    for run in runs:
        groups.setdefault(run.setting, []).append(run)
    summaries = []
    for setting in sorted(groups, key=lambda setting: [(key, str(value)) for key, value in setting]):
        members = groups[setting]
        summaries.append({
            "setting": dict(setting), "runs": len(members), "seeds": [run.seed for run in members],
            "files": [str(run.path) for run in members],
            "metrics": {name: summarise([run.metrics[name] for run in members if name in run.metrics])
                        for name in metric_names(run.metrics for run in members)}})
    return summaries


def repeated_seeds(summary):
    """Seeds that occur more than once in a group (unknown seeds aside)."""
    seeds = [seed for seed in summary["seeds"] if seed is not None]
    return sorted({seed for seed in seeds if seeds.count(seed) > 1}, key=str)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

def cell(summary, runs):
    """'mean +- std', '-' for the std of one run, '(n=k)' when only k of the group's runs have the metric."""
    if summary is None:
        return ""
    std = "-" if summary["std"] is None else f"{summary['std']:.2f}"
    return f"{summary['mean']:.2f} +- {std}" + (f" (n={summary['n']})" if summary["n"] != runs else "")


def text_value(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def table(summaries):
    """Plain-text tables, one per mode: the setting columns, n, seeds and one column per metric."""
    blocks = []
    for mode in dict.fromkeys(summary["setting"].get("mode") for summary in summaries):
        rows = [summary for summary in summaries if summary["setting"].get("mode") == mode]
        keys = list(dict.fromkeys(key for row in rows for key in row["setting"] if key != "mode"))
        names = metric_names(row["metrics"] for row in rows)
        header = [*keys, "n", "seeds", *names]
        lines = [[*(text_value(row["setting"].get(key, "")) for key in keys), str(row["runs"]),
                  ",".join("?" if seed is None else str(seed) for seed in row["seeds"]),
                  *(cell(row["metrics"].get(name), row["runs"]) for name in names)] for row in rows]
        widths = [max(len(line[column]) for line in [header, *lines]) for column in range(len(header))]
        runs = sum(row["runs"] for row in rows)
        blocks.append("\n".join([f"{mode}: {len(rows)} setting(s), {runs} run(s)",
                                 *("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip()
                                   for line in [header, *lines])]))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def build_parser():
    parser = ArgumentParser(description="Mean +- std (sample std, n) of evaluation runs' results.json, "
                                                 "grouped by setting (see the module docstring).")
    parser.add_argument("paths", nargs="+", help="run folders, results.json files, folders searched recursively, "
                                                 "or glob patterns")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the summary to this JSON file")
    parser.add_argument("--skip-bad", action="store_true",
                        help="warn about an unusable results.json and leave it out, instead of stopping")
    parser.add_argument("--by", action="append", default=[], metavar="KEY",
                        help="also group by this results.json entry (repeatable), e.g. pretrained")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="do not group by this setting entry (repeatable), e.g. epochs")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        files = find_results(args.paths)
    except ResultsError as error:
        raise SystemExit(f"error: {error}") from None
    runs = []
    for path, named in files:
        try:
            runs.append(read_run(path, args.by, args.ignore))
        except NotAnEvaluation as error:
            if named and not args.skip_bad:
                raise SystemExit(f"error: {error}") from None
            print(f"note: skipped {error}", file=sys.stderr)
        except ResultsError as error:
            if not args.skip_bad:
                raise SystemExit(f"error: {error} (--skip-bad leaves such files out)") from None
            print(f"warning: skipped {error}", file=sys.stderr)
    if not runs:
        raise SystemExit("error: no evaluation results to aggregate")
    summaries = aggregate(runs)
    for summary in summaries:
        for seed in repeated_seeds(summary):
            setting = " ".join(f"{key}={text_value(value)}" for key, value in summary["setting"].items())
            print(f"warning: seed {seed} occurs {summary['seeds'].count(seed)} times in {setting}: the same run "
                  f"counted twice? ({', '.join(summary['files'])})", file=sys.stderr)
    print(table(summaries))
    if args.json:
        write_atomic(args.json, (json.dumps({"groups": summaries}, indent=2) + "\n").encode())
        print(f"summary written to {args.json}")
    return summaries


if __name__ == "__main__":
    main()
