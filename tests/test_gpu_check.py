"""benchmarks/gpu_check.sh and gpu_check.py: without CUDA the script says so and exits 0; every
section runs on the CPU at tiny sizes (fp16 autocast runs there too), so its plumbing is tested
before a GPU ever runs it; the peak table and the projection are checked by hand."""
import math
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.benchmark
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would measure it")
def test_without_cuda_the_script_says_so_and_exits_0():
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gpu_check: no CUDA device here") and "nothing measured" in result.stdout
    assert "Golden" not in result.stdout and "samples/s" not in result.stdout  # nothing else ran
    assert gpu_check.main([]) is None  # the Python part alone too, asked for CUDA


@pytest.mark.benchmark
def test_every_section_runs_on_the_cpu_at_tiny_sizes(tmp_path, capsys):
    results = gpu_check.main(["--device", "cpu", "--quick", "--two-processes", "--json", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert results["device"]["fp16_peak_flop_s"] > 0 and "measured here" in results["device"]["peak_source"]
    assert [row["batch_size"] for row in results["steps"]] == list(gpu_check.QUICK["batch_sizes"])
    for row in results["steps"]:
        # MFU < 1 holds against a vendor's peak only: a peak measured here on a 256 x 256 fp16 matmul (the
        # CPU's case) is no upper bound, and the CPU's step ran above it on some machines.
        assert row["samples_per_s"] > 0 and row["step_s_best"] <= row["step_s_median"] and 0 < row["mfu"] < math.inf
        assert row["gflop_per_sample"] > 0 and row["peak_memory_gib"] is None  # no CUDA memory on the CPU
    pipelines = {(row["pipeline"].split()[0], row["workers"]) for row in results["pipeline"]}
    assert pipelines == {(kind, workers) for kind in ("numpy", "raw") for workers in (0, 2)}
    assert all(row["samples_per_s"] > 0 for row in results["pipeline"])
    one, two = results["two_processes"]["rows"]
    assert (one["processes"], two["processes"]) == (1, 2) and two["sync_batchnorm"] == "distributed.SyncBatchNorm1d"
    assert two["loss_relative_difference"] < 1e-4  # the same global batch, the same loss
    assert results["projection"]["hours"] > 0
    for heading in ("### fp16 training step", "### Data pipeline", "### pretrain.py in two processes",
                    "### Projection (computed, not measured)"):
        assert heading in printed
    assert (tmp_path / "r.json").exists()


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 SXM5 80GB", 989.4),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA H100 PCIe", None), ("NVIDIA GH200 480GB", None), ("NVIDIA GeForce RTX 4090", None),
])
def test_the_dense_fp16_peak_is_looked_up_by_device_name(name, tflops):
    assert gpu_check.dense_fp16_peak(name) == (None if tflops is None else tflops * 1e12)


def test_the_projection_takes_the_slower_of_the_step_and_the_loader():
    steps = [{"batch_size": 128, "step_s_median": 0.1}, {"batch_size": 512, "step_s_median": 0.4}]
    steps_per_epoch = math.ceil(40091 / 512)  # 79: the partial last batch counts, as released
    fast_loader = gpu_check.projection(steps, [{"samples_per_s": 1e6}])
    assert fast_loader["steps_per_epoch"] == steps_per_epoch
    assert fast_loader["hours"] == pytest.approx(451 * steps_per_epoch * 0.4 / 3600)
    slow_loader = gpu_check.projection(steps, [{"samples_per_s": 100.0}])
    assert slow_loader["hours"] == pytest.approx(451 * 40091 / 100.0 / 3600)
    assert gpu_check.projection([{"batch_size": 512, "error": "out of memory"}], []) is None
