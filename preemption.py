"""Stop pretraining cleanly when the cluster asks for its GPUs back.

SLURM sends SIGTERM before it kills a preempted job, and SIGUSR1 (or the signal of --signal) ahead of
its time limit. While `StopSignals` is active, either signal only raises a flag; training looks at it
after every step, every process agreeing (distributed.any_process: under torchrun only some processes
may get the signal), writes a checkpoint that resumes inside the epoch, and exits with EXIT_CODE.

DataLoader workers ignore both signals (`ignore_in_worker`): SLURM signals every process of a job,
and a worker that died of it would take the run down before the checkpoint.
"""
import os
import signal

import distributed

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CODE = os.EX_TEMPFAIL  # 75, "temporary failure, try again": stopped on request, resumable


class StopSignals:
    """Within `with StopSignals() as stop:` SIGTERM and SIGUSR1 set `stop.received` instead of killing the
    process; the previous handlers come back on exit."""

    def __init__(self):
        self.received = None  # the signal's name once one arrived
        self._previous = {}

    def __enter__(self):
        for number in SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, number, frame):
        self.received = signal.Signals(number).name

    def agreed(self, device):
        """Whether any process received a stop signal; a collective, called by every process at the same point."""
        return distributed.any_process(self.received is not None, device)


def ignore_in_worker():
    """For DataLoader workers: the main process decides when to stop, the worker must not die of the signal."""
    for number in SIGNALS:
        signal.signal(number, signal.SIG_IGN)
