"""Run pretrain.py under torchrun, then report the Gloo threads each process still has.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/gloo_teardown.py <pretrain.py arguments>

runs `pretrain.main` unchanged and prints `rank R: N Gloo threads left` once it has returned, that is at
the point where the interpreter would start to shut down. A process group that `distributed.cleanup()`
really destroyed has joined its threads (Gloo names them gloo_tcp_loop and pt_gloo_runloop); threads
still there outlive the interpreter, and one that frees a tensor during its shutdown aborts a run that
had finished well. The thread names come from /proc: elsewhere (macOS) the run goes on and nothing is
reported, since the straight two-process reference run of conftest.py is launched through this script.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `import pretrain`

import pretrain  # noqa: E402
from options.pretrain import build_parser  # noqa: E402


def gloo_threads():
    """The names of this process's threads that belong to Gloo (a thread that ends meanwhile is skipped)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:
            pass
    return [name for name in names if "gloo" in name]


if __name__ == "__main__":
    pretrain.main(build_parser().parse_args(sys.argv[1:]))
    if Path("/proc/self/task").is_dir():
        print(f"rank {os.environ['RANK']}: {len(gloo_threads())} Gloo threads left", flush=True)
