"""Launch pretrain.py with one injected worker death, for the elastic-training test.

    python -m torch.distributed.run --standalone --nproc_per_node=2 --max-restarts=1 \
        tests/fault_injection.py --die-marker /tmp/died --die-rank 1 --die-epoch 1 --die-after-steps 2 \
        -- <pretrain.py arguments>

runs `pretrain.main` unchanged, except that the process of rank `--die-rank` exits abruptly
(`os._exit(1)`: no exception, no cleanup, like a segfault or an OOM kill) after `--die-after-steps`
training steps of epoch `--die-epoch`, and only if `--die-marker` does not exist yet; it creates the
marker just before dying. The worker group that torchrun restarts therefore runs cleanly, which is what
lets a test check that the restarted job resumes from its last checkpoint and finishes with the weights
of an uninterrupted run. The fault lives here, in tests/, so production code carries no test hooks.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `import pretrain`

import distributed  # noqa: E402
import pretrain  # noqa: E402
from options.pretrain import build_parser  # noqa: E402


class DyingLoader:
    """Wraps a DataLoader: yields `steps` batches, then leaves a marker and kills this process."""

    def __init__(self, loader, steps, marker):
        self.loader, self.steps, self.marker = loader, steps, Path(marker)
        self.batch_size = loader.batch_size  # train_one_epoch reads it to count the global batch

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step == self.steps:
                self.marker.touch()
                os._exit(1)  # abrupt: no finally blocks, no process-group teardown, no checkpoint
            yield batch


def install(marker, rank, epoch, after_steps):
    """Make pretrain.train_one_epoch die once on `rank` in `epoch` (while `marker` is absent)."""
    real_train_one_epoch = pretrain.train_one_epoch

    def train_one_epoch(model, loader, optimizer, scaler, this_epoch, *args, **kwargs):
        if this_epoch == epoch and distributed.get_rank() == rank and not Path(marker).exists():
            loader = DyingLoader(loader, after_steps, marker)
        return real_train_one_epoch(model, loader, optimizer, scaler, this_epoch, *args, **kwargs)

    pretrain.train_one_epoch = train_one_epoch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--die-marker", required=True, help="file created when the fault fires; none: fire")
    parser.add_argument("--die-rank", type=int, default=1, help="the process that dies")
    parser.add_argument("--die-epoch", type=int, default=1, help="the epoch (0-based) it dies in")
    parser.add_argument("--die-after-steps", type=int, default=2, help="training steps it completes first")
    parser.add_argument("pretrain_args", nargs=argparse.REMAINDER, help="-- then pretrain.py's arguments")
    args = parser.parse_args(argv)
    install(args.die_marker, args.die_rank, args.die_epoch, args.die_after_steps)
    pretrain_args = args.pretrain_args[1:] if args.pretrain_args[:1] == ["--"] else args.pretrain_args
    pretrain.main(build_parser().parse_args(pretrain_args))


if __name__ == "__main__":
    main()
