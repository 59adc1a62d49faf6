"""End to end on real data: MSR Action3D, cross-subject, pretrained encoder against random weights.

    python benchmarks/real_data.py                                   # ~5-10 min on a 2-core CPU
    python benchmarks/real_data.py --data-path /datasets/msr_action3d --out runs/msr_action3d
    python benchmarks/real_data.py --quick --out /tmp/msr_quick      # tiny sizes: plumbing only, < 1 min

Four stages, each through the project's own entry points (nothing here re-implements them):
1. convert: data_gen/msr_gendata.gendata on the 557 sequences of `files_used_in_cvpr12_paper.txt`,
   subjects 1 3 5 7 9 train (284), 2 4 6 8 10 test (273), 20 classes;
2. pretrain: pretrain.main on the training split, without labels;
3. linear probe: action_recognition.main with the released protocol (SGD lr 0.03, batch 512, 150
   epochs, lr x0.1 at 120 and 140), trained on the training split, top-1 on the test split;
4. kNN: action_retrieval.main (k = 1, cosine), training split as the memory, test split as queries.
Stages 3 and 4 run for the pretrained encoder and for a randomly initialised one of the same
architecture and sizes, each on the fused input (joint + bone + motion, the feature y_u) and on
joint, bone and motion alone. With the same --seed the random encoder is the very initialisation
pretraining started from, so the difference between the two rows is what pretraining learnt.

The run folder (--out) receives data/ (the converted arrays), pretrain/ (pretrain.py's run folder),
eval/<encoder>_<input>/{linear,knn}/ (the evaluation run folders), logs/ (each stage's console
output), results.md (the table) and results.json (the table, the settings, the pretraining losses,
wall times and the machine). The table is also printed, with the total wall time.

The default model and pretraining recipe are sized for a 2-core CPU, and chosen so that pretraining
clearly helps on this small dataset; the reasoning is in the defaults' help texts.
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import action_recognition  # noqa: E402
import action_retrieval  # noqa: E402
import pretrain  # noqa: E402
from benchmarks.common import machine_info, machine_line, markdown_table  # noqa: E402
from data_gen.msr_gendata import gendata  # noqa: E402
from options.downstream import LINEAR_PROBE, build_recognition_parser, build_retrieval_parser  # noqa: E402
from options.pretrain import build_parser as build_pretrain_parser  # noqa: E402

DEFAULT_DATA_PATH = ROOT.parent / "shared" / "data" / "msr_action3d"
SKELETON_FOLDER = "MSRAction3DSkeletonReal3D"
SAMPLE_LIST = "files_used_in_cvpr12_paper.txt"
PROTOCOL = ("--protocol", "cross_subject")  # the dataset itself is --pre-dataset or --finetune-dataset msr

ENCODERS = ("pretrained", "random")
INPUTS = {"fused": ("joint", "bone", "motion"), "joint": ("joint",), "bone": ("bone",), "motion": ("motion",)}

# --quick: every stage runs, on a model and schedule small enough for a test (the numbers mean nothing).
QUICK = dict(hidden_size=16, num_head=1, num_layer=1, projector_dim=32, epochs=1, batch_size=64, probe_epochs=5)


def build_parser():
    parser = argparse.ArgumentParser(
        description="MSR Action3D end to end: convert, pretrain without labels, then linear probe and kNN "
                    "of the pretrained and a random-weight encoder on fused, joint, bone and motion input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-path", type=Path, default=DEFAULT_DATA_PATH,
                        help=f"folder holding {SKELETON_FOLDER}/ and {SAMPLE_LIST}: ../shared/data/msr_action3d "
                             "beside the repository by default, wherever the command runs from")
    parser.add_argument("--out", type=Path, default=Path("runs/msr_action3d"),
                        help="run folder of the benchmark; must be empty or absent unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="reuse a non-empty --out: its data/, pretrain/, eval/ and logs/ are rebuilt from scratch")
    model = parser.add_argument_group("model (the random-weight encoder has the same sizes)")
    model.add_argument("--hidden-size", type=int, default=256,
                       help="H, token width (released: 1024, about 16x the compute of 256: too slow for a "
                            "benchmark of minutes on a CPU)")
    model.add_argument("--num-head", type=int, default=1, help="attention heads (released: 1)")
    model.add_argument("--num-layer", type=int, default=1, help="layers per stream (released: 1)")
    model.add_argument("--projector-dim", type=int, default=1024, help="D, projector output width (released: 4096)")
    train = parser.add_argument_group("pretraining (Adam, as released; sizes chosen for a 2-core CPU)")
    train.add_argument("--epochs", type=int, default=20,
                       help="pretraining epochs (80 steps at the default batch); on MSR the gain over random "
                            "weights peaks around 10-20 epochs and fades with longer training, see results.md")
    train.add_argument("-b", "--batch-size", type=int, default=64,
                       help="pretraining batch; 284 training samples make 4 steps an epoch at 64 (the last "
                            "partial batch is dropped)")
    train.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (released: 5e-4)")
    train.add_argument("--schedule", type=int, nargs="*", default=None,
                       help="epochs at which the lr is x0.1 (default: at 78%% of --epochs, the released 351/451)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--probe-epochs", type=int, default=LINEAR_PROBE["epochs"],
                            help="linear-probe epochs (released: 150; the lr steps stay at the released epochs)")
    run = parser.add_argument_group("runtime")
    run.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                     help="device of every stage (auto: a GPU if there is one)")
    run.add_argument("--threads", type=int, default=0,
                     help="torch CPU threads (0: torch's default, which follows OMP_NUM_THREADS); on a machine "
                          "shared with other jobs, fewer threads than cores avoids oversubscription")
    run.add_argument("--workers", type=int, default=0,
                     help="DataLoader workers: 0 keeps everything in this process (MSR's views are tiny)")
    run.add_argument("--seed", type=int, default=0, help="seed of pretraining, both encoders' initialisation "
                                                         "and the probes")
    run.add_argument("--quick", action="store_true",
                     help="tiny model, 1 pretraining epoch, 5 probe epochs: checks the plumbing in seconds, "
                          "the accuracies mean nothing (overrides the size and epoch flags)")
    return parser


# ---------------------------------------------------------------------------------------------
# Inputs and the run folder
# ---------------------------------------------------------------------------------------------

def check_data_path(data_path):
    """The skeleton folder and the 557-sample list under data_path; a one-line SystemExit otherwise."""
    skeletons, sample_list = Path(data_path) / SKELETON_FOLDER, Path(data_path) / SAMPLE_LIST
    for path in (skeletons, sample_list):
        if not path.exists():
            raise SystemExit(f"error: MSR Action3D not found: {path} does not exist (pass --data-path, the folder "
                             f"holding {SKELETON_FOLDER}/ and {SAMPLE_LIST}; see ../shared/data/msr_action3d/"
                             f"SOURCE.md)")
    return skeletons, sample_list


def prepare_out(out, overwrite):
    """Create the run folder; refuse a non-empty one without --overwrite, so that no earlier result or
    half-finished pretraining run (which pretrain.py would silently resume) is mixed into this one."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SystemExit(f"error: {out} is not empty: pass --overwrite to rebuild it, or another --out")
        import shutil  # only here: the one place this script deletes anything, and only its own subfolders

        for name in ("data", "pretrain", "eval", "logs"):
            shutil.rmtree(out / name, ignore_errors=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def stage(name, log_path, timings):
    """Run one stage with its console output (progress bars included) sent to log_path; time it into
    timings[name]. The benchmark's own output stays one line per stage and the table."""
    print(f"{name} ...", end=" ", flush=True)
    start = time.perf_counter()
    try:
        with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    except BaseException:
        print(f"failed; its output is in {log_path}", flush=True)
        raise
    timings[name] = time.perf_counter() - start
    print(f"{timings[name]:.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------
# The stages, each a call of the project's own entry point
# ---------------------------------------------------------------------------------------------

def size_flags(args):
    return ["--hidden-size", str(args.hidden_size), "--num-head", str(args.num_head),
            "--num-layer", str(args.num_layer)]


def runtime_flags(args):
    return ["--device", args.device, "--workers", str(args.workers), "--seed", str(args.seed)]


def lr_milestones(args):
    """--schedule, or by default one x0.1 step at the released fraction of the run (351 of 451 epochs)."""
    return args.schedule if args.schedule is not None else [round(args.epochs * 351 / 451)]


def pretrain_encoder(args, data_root, run_dir):
    """pretrain.main on the training split; returns (the last epoch's checkpoint, per-epoch log records)."""
    flags = ["--pre-dataset", "msr", *PROTOCOL, "--data-root", str(data_root), "--checkpoint-path", str(run_dir),
             *size_flags(args), "--projector-dim", str(args.projector_dim), "--lr", str(args.lr),
             "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
             "--schedule", *map(str, lr_milestones(args)), "--save-freq", str(args.epochs), *runtime_flags(args)]
    pretrain.main(build_pretrain_parser().parse_args(flags))
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return run_dir / f"checkpoint_{args.epochs - 1:04d}.pth.tar", log


def evaluation_flags(args, data_root, run_dir, modalities, checkpoint):
    """Flags shared by the probe and kNN; no --pretrained means a randomly initialised encoder."""
    encoder = [] if checkpoint is None else ["--pretrained", str(checkpoint)]
    return ["--finetune-dataset", "msr", *PROTOCOL, "--data-root", str(data_root), "--checkpoint-path", str(run_dir),
            *size_flags(args), "--modalities", *modalities, *encoder, *runtime_flags(args)]


def linear_probe(args, data_root, run_dir, modalities, checkpoint):
    """action_recognition.main with the released linear protocol; returns its results dict."""
    flags = evaluation_flags(args, data_root, run_dir, modalities, checkpoint)
    return action_recognition.main(build_recognition_parser().parse_args([*flags, "--epochs", str(args.probe_epochs)]))


def knn(args, data_root, run_dir, modalities, checkpoint):
    """action_retrieval.main with the released k = 1; returns its results dict."""
    return action_retrieval.main(build_retrieval_parser().parse_args(
        evaluation_flags(args, data_root, run_dir, modalities, checkpoint)))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

TABLE_HEADER = ("encoder", "input", "linear top-1 (%)", "kNN top-1 (%)", "linear (s)", "kNN (s)")


def table_rows(rows):
    return [(row["encoder"], row["input"], f"{row['linear_top1']:.2f}", f"{row['knn_top1']:.2f}",
             f"{row['linear_s']:.1f}", f"{row['knn_s']:.1f}") for row in rows]


def write_report(out, report):
    """results.md (a short header, the table, the settings) and results.json (everything)."""
    settings = report["settings"]
    pretraining = report["pretraining"]
    lines = [
        "# MSR Action3D, cross-subject: pretrained vs random-weight UmURL encoder",
        "",
        f"{report['samples']['train']} training / {report['samples']['val']} test sequences, 20 classes. "
        f"Linear probe: released protocol ({settings['probe_epochs']} epochs), final-epoch top-1 on the test "
        f"split. kNN: k = 1, cosine. Fused = joint + bone + motion (y_u).",
        "",
        markdown_table(TABLE_HEADER, table_rows(report["rows"])),
        "",
        f"Encoder: hidden {settings['hidden_size']}, {settings['num_head']} head(s), {settings['num_layer']} "
        f"layer(s). Pretraining: {settings['epochs']} epochs, batch {settings['batch_size']}, Adam lr "
        f"{settings['lr']:g}, lr x0.1 at {settings['schedule']}, projector {settings['projector_dim']}; loss "
        f"{pretraining['first_loss']:.3f} -> {pretraining['last_loss']:.3f} in "
        f"{report['timings_s']['pretrain']:.0f} s. "
        f"Seed {settings['seed']}{', --quick' if settings['quick'] else ''}.",
        f"Total wall time {report['total_s']:.0f} s on {machine_line(report['machine'])}.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def apply_quick(args):
    """With --quick, replace the size and epoch settings by the tiny ones of QUICK (in place)."""
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


def main(args):
    start = time.perf_counter()
    apply_quick(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    skeletons, sample_list = check_data_path(args.data_path)  # before anything is written
    out = prepare_out(args.out, args.overwrite)
    data_root, logs, timings = out / "data", out / "logs", {}

    with stage("convert", logs / "convert.log", timings):
        samples = gendata(skeletons, data_root, sample_list)
    with stage("pretrain", logs / "pretrain.log", timings):
        checkpoint, pretrain_log = pretrain_encoder(args, data_root, out / "pretrain")

    rows = []
    for encoder in ENCODERS:
        weights = checkpoint if encoder == "pretrained" else None
        for input_name, modalities in INPUTS.items():
            name = f"{encoder}_{input_name}"
            run_dir = out / "eval" / name
            with stage(f"linear {name}", logs / f"linear_{name}.log", timings):
                linear = linear_probe(args, data_root, run_dir / "linear", modalities, weights)
            with stage(f"knn {name}", logs / f"knn_{name}.log", timings):
                neighbours = knn(args, data_root, run_dir / "knn", modalities, weights)
            rows.append({"encoder": encoder, "input": input_name, "modalities": list(modalities),
                         "linear_top1": linear["top1"], "linear_best_top1": linear["best_top1"],
                         "linear_top5": linear["top5"], "knn_top1": neighbours["top1"],
                         "linear_s": timings[f"linear {name}"], "knn_s": timings[f"knn {name}"]})

    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    settings["schedule"] = lr_milestones(args)
    report = {
        "dataset": "msr", "protocol": "cross_subject", "samples": samples, "settings": settings,
        "pretraining": {"checkpoint": str(checkpoint), "first_loss": pretrain_log[0]["loss"],
                        "last_loss": pretrain_log[-1]["loss"], "log": pretrain_log},
        "rows": rows, "timings_s": timings, "total_s": time.perf_counter() - start, "machine": machine_info(),
    }
    print("\n" + write_report(out, report))
    print(f"results: {out / 'results.md'}, {out / 'results.json'}; total wall time {report['total_s']:.0f} s")
    return report


if __name__ == "__main__":
    main(build_parser().parse_args())
