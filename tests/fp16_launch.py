"""Launch pretrain.py with a chosen initial fp16 loss scale, for the data-parallel fp16 test.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/fp16_launch.py 1024 -- \
        <pretrain.py arguments>

runs `pretrain.main` unchanged, except that its GradScaler starts at the given scale instead of
torch's 2^16. At the tiny test sizes the first gradients overflow fp16 at 2^16, so every step would be
skipped; a scale that fits lets the test compare the step itself. The choice lives here, in tests/,
so production code carries no test hooks.
"""
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `import pretrain`

import pretrain  # noqa: E402
from options.pretrain import build_parser  # noqa: E402

if __name__ == "__main__":
    scale, separator, *arguments = sys.argv[1:]
    assert separator == "--", "usage: fp16_launch.py <initial scale> -- <pretrain.py arguments>"
    torch.amp.GradScaler = functools.partial(torch.amp.GradScaler, init_scale=float(scale))
    pretrain.main(build_parser().parse_args(arguments))
