"""Benchmark one pretraining step at the default model size: the yardstick against umurl.py.

    python benchmarks/train_step.py --batch-size 16 --steps 3 --json train_step.json
    python benchmarks/train_step.py --compile        # also time torch.compile(UmURL)

A step is what pretrain.py runs per batch: forward of the four views under autocast, the loss,
backward and the Adam update (GradScaler for fp16). Variants (VARIANTS below), each on random views:
the yardstick (benchmarks/naive_model.py with torch's default Adam), umurl.py with its fast paths
(the covariance term from the (B, B) Gram matrix, fused Adam from pretrain.build_optimizer),
umurl.py without each of them in turn (what each one brings), umurl.py with one batched encoder pass
(a candidate that was measured and not adopted), and with --compile torch.compile of umurl.py; each
in fp32 and under bf16 autocast on the CPU, and in fp32/fp16/bf16 on CUDA when there is a GPU. For
each: samples/s from the best of --steps timed rounds, the FLOP of one sample's forward + backward
counted by torch.utils.flop_counter (matmul-class ops: mm, addmm, bmm, attention), the FLOP/s that
makes, the model-FLOP utilisation against the matmul peak of the same dtype measured in the same
run, and (CPU) the share of one profiled step's CPU time spent in those matmul-class ops.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (best_and_median, machine_info, markdown_table, matmul_peak, section_main,  # noqa: E402
                               synchronize, time_calls)
from benchmarks.naive_model import NaiveUmURL, naive_loss  # noqa: E402
from pretrain import build_optimizer  # noqa: E402
from skeleton import joint_to_bone, joint_to_motion  # noqa: E402
from umurl import UmURL, UmURLConfig, umurl_loss  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def random_views(batch_size, device, frames=64, joints=25, persons=2, seed=0):
    """Four (N, C, T, V, M) views of skeleton-sized random numbers."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, frames, joints, persons, generator=generator).to(device) for _ in range(4)]


VARIANTS = {
    "naive": "the yardstick: benchmarks/naive_model.py, torch's default Adam",
    "umurl": "umurl.py and pretrain.build_optimizer: Gram covariance, fused Adam",
    "umurl without Gram covariance": "the loss's covariance term from the full (D, D) covariance",
    "umurl without fused Adam": "torch's default Adam (a loop of small ops per tensor on the CPU)",
    "umurl + batched pass": "candidate, not adopted: the four encoder passes as one over a 4N batch",
}

SAME_FLOP_AS = {"umurl without fused Adam": "umurl"}  # same model and loss: only the optimizer differs


class BatchedPass(nn.Module):
    """umurl.UmURL with its four encoder passes (joint of v1, bone of v2, motion of v3, fused v4) run as
    ONE pass over the four token batches stacked along N, each embedding MLP over its view and v4.

    Attention, LayerNorm and max-pooling act per sequence, so this equals four passes up to float
    rounding (tests/test_fast_paths.py); the projectors keep their separate BatchNorm batches.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, v1, v2, v3, v4):
        backbone, n = self.model.backbone, v1.shape[0]
        t_j, s_j = backbone.j_emb(torch.cat([v1, v4]))  # (2N, T, H), (2N, M*V, H)
        t_b, s_b = backbone.b_emb(joint_to_bone(torch.cat([v2, v4]), backbone.parents))
        t_m, s_m = backbone.m_emb(joint_to_motion(torch.cat([v3, v4])))
        t_u, s_u = backbone.mm_fusion([t_j[n:], t_b[n:], t_m[n:]], [s_j[n:], s_b[n:], s_m[n:]])  # v4 fused
        t = torch.cat([t_j[:n], t_b[:n], t_m[:n], t_u])  # (4N, T, H)
        s = torch.cat([s_j[:n], s_b[:n], s_m[:n], s_u])  # (4N, M*V, H)
        return self.model.project(*backbone.ma_encoder(t, s).split(n))  # 4 x (N, 2H) -> projections


def umurl_total(z):
    return umurl_loss(z)[0]


def build(implementation, sizes, projector_dim, device, compile_model=False):
    """(model, loss function, optimizer) of one of VARIANTS, the same initial weights for all."""
    torch.manual_seed(0)
    config = UmURLConfig(**sizes, projector_dim=projector_dim)
    model = (NaiveUmURL if implementation == "naive" else UmURL)(config).to(device)
    if implementation == "umurl + batched pass":
        model = BatchedPass(model)
    loss = naive_loss if implementation in ("naive", "umurl without Gram covariance") else umurl_total
    if implementation in ("naive", "umurl without fused Adam"):
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5)
    else:
        optimizer = build_optimizer(model, 5e-4, 1e-5, device)
    return (torch.compile(model) if compile_model else model), loss, optimizer


def make_step(model, loss_fn, optimizer, views, amp_dtype):
    """A closure running one full training step, like pretrain.train_one_epoch's loop body."""
    device = views[0].device
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def step():
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            z = model(*views)
        loss = loss_fn(z)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def flops_per_sample(implementation, sizes, projector_dim, batch_size, device="cpu"):
    """FLOP of forward + loss + backward per sample, counted in fp32 (the count does not depend on
    dtype or device; a GPU only counts a large batch faster)."""
    model, loss_fn, _ = build(implementation, sizes, projector_dim, torch.device(device))
    views = random_views(batch_size, device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(*views)).backward()
    return counter.get_total_flops() / batch_size


def is_matmul(op_name):
    """Matrix-multiply-class ops: what the FLOP count covers and the matmul peak bounds."""
    return op_name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm") or \
        op_name.startswith("aten::_scaled_dot_product")


def profile_step(step, top=5):
    """Where one step's CPU time goes: the matmul share and the `top` ops by self time (shares of it)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    ops = [(event.key, event.self_cpu_time_total) for event in profiler.key_averages()]
    total = sum(time for _, time in ops)
    ranked = sorted(ops, key=lambda op: -op[1])[:top]
    return {"matmul_share": round(sum(time for name, time in ops if is_matmul(name)) / total, 3),
            "top_ops": [(name, round(time / total, 3)) for name, time in ranked]}


def timed(step, device):
    """Seconds of one call."""
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def model_sizes(args):
    """The sizes that differ from the released model's (umurl.UmURLConfig): --hidden-size."""
    return {"hidden_size": args.hidden_size}


def measure_device(names, precisions, args, device, flops):
    """Rows for every (variant, precision) on one device, timed in interleaved rounds.

    Each round takes the matmul peaks and then one step of every variant, so a change in the load of
    a shared machine touches all variants alike; every figure is the best over the rounds.
    """
    sizes = model_sizes(args)
    models = {name: build(name, sizes, args.projector_dim, device) for name in names}
    if args.compile:
        models["umurl + compile"] = build("umurl", sizes, args.projector_dim, device, compile_model=True)
    views = random_views(args.batch_size, device)
    steps = {(name, p): make_step(*models[name], views, DTYPES[p]) for p in precisions for name in models}
    for (name, _), step in steps.items():
        for _ in range(args.warmup + 2 * name.endswith("compile")):  # compiling happens in the first calls
            step()
    peaks, seconds = dict.fromkeys(precisions, 0.0), {key: [] for key in steps}
    for _ in range(args.steps):
        for p in precisions:
            peaks[p] = max(peaks[p], matmul_peak(DTYPES[p] or torch.float32, device, size=args.peak_size))
        for key, step in steps.items():
            seconds[key].append(timed(step, device))
    rows = []
    for (name, precision), step in steps.items():
        best, median = best_and_median(seconds[name, precision])
        samples_per_s = args.batch_size / best
        flop = flops[name.removesuffix(" + compile")]
        achieved = flop * samples_per_s
        # On CUDA the CPU-side profile says little about the GPU's time: profiled on the CPU only.
        profile = profile_step(step) if device.type == "cpu" else {"matmul_share": None, "top_ops": []}
        rows.append({"implementation": name, "device": device.type, "precision": precision,
                     "batch_size": args.batch_size, "step_s_best": round(best, 3), "step_s_median": round(median, 3),
                     "samples_per_s": round(samples_per_s, 2), "gflop_per_sample": round(flop / 1e9, 2),
                     "achieved_gflop_s": round(achieved / 1e9, 1), "peak_gflop_s": round(peaks[precision] / 1e9, 1),
                     "mfu": achieved / peaks[precision], **profile})
    return rows


def add_speedups(rows):
    """Speedup of each row against the naive fp32 and the naive same-precision row of its device."""
    naive = {(r["device"], r["precision"]): r["samples_per_s"] for r in rows if r["implementation"] == "naive"}
    for row in rows:
        row["speedup_vs_naive_fp32"] = round(row["samples_per_s"] / naive[row["device"], "fp32"], 2)
        row["speedup_vs_naive_same_precision"] = round(row["samples_per_s"] / naive[row["device"], row["precision"]], 2)


def optimizer_step_seconds(sizes, projector_dim, device, repeats=3):
    """Best seconds of one Adam update of the whole model from random gradients: torch's default
    (released) against pretrain.build_optimizer's fused kernel. The step's fixed cost, whatever the batch."""
    model = UmURL(UmURLConfig(**sizes, projector_dim=projector_dim)).to(device)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizers = {"released": torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-5),
                  "fused": build_optimizer(model, 5e-4, 1e-5, device)}
    return {name: round(best_and_median(time_calls(optimizer.step, repeats, device=device))[0], 4)
            for name, optimizer in optimizers.items()}


def run(args):
    """All variants on every device; returns {machine, sizes, flop_per_sample, rows, optimizer_step_s}."""
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    precisions = {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "fp16", "bf16"]}
    names = list(VARIANTS) if args.ablations else ["naive", "umurl"]
    sizes = model_sizes(args)
    flops = {}
    for name in names:  # the optimizer is not counted: a variant that differs only there shares its twin's count
        twin = SAME_FLOP_AS.get(name)
        flops[name] = flops[twin] if twin in flops else flops_per_sample(name, sizes, args.projector_dim,
                                                                           args.batch_size)
    rows = [row for device in devices for row in measure_device(names, precisions[device.type], args, device, flops)]
    add_speedups(rows)
    optimizer = {d.type: optimizer_step_seconds(sizes, args.projector_dim, d) for d in devices}
    return {"machine": machine_info(), "sizes": sizes, "projector_dim": args.projector_dim,
            "batch_size": args.batch_size, "flop_per_sample": flops, "rows": rows, "optimizer_step_s": optimizer}


def table(results):
    header = ("implementation", "device", "precision", "batch", "step s (best / median)", "samples/s",
              "vs naive fp32", "vs naive same precision", "GFLOP/sample", "achieved GFLOP/s",
              "matmul peak GFLOP/s", "MFU", "matmul share of CPU time")
    rows = [(r["implementation"], r["device"], r["precision"], r["batch_size"],
             f"{r['step_s_best']} / {r['step_s_median']}", r["samples_per_s"], f"{r['speedup_vs_naive_fp32']}x",
             f"{r['speedup_vs_naive_same_precision']}x", r["gflop_per_sample"], r["achieved_gflop_s"],
             r["peak_gflop_s"], f"{100 * r['mfu']:.0f}%",
             "-" if r["matmul_share"] is None else f"{100 * r['matmul_share']:.0f}%") for r in results["rows"]]
    adam = "; ".join(f"{device}: {t['released']} s released, {t['fused']} s fused"
                     for device, t in results["optimizer_step_s"].items())
    return markdown_table(header, rows) + f"\n\nOne Adam update of all parameters alone ({adam})."


def add_arguments(parser):
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step (each has 4 views)")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed rounds, each one step of every variant (the best is kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--hidden-size", type=int, default=UmURLConfig().hidden_size, help="H (default: released)")
    parser.add_argument("--projector-dim", type=int, default=4096, help="D, projector output width")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmuls of the peak")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: torch's choice, one per physical core)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(UmURL)")
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                        help="also time umurl.py without each fast path in turn")


def main(argv=None):
    section_main(__doc__, add_arguments, run, table, argv)


if __name__ == "__main__":
    main()
