"""Stop pretraining cleanly when the cluster asks for its GPUs back.

SLURM sends SIGTERM before it kills a preempted job, and SIGUSR1 (or the signal of --signal) ahead of
its time limit. While `StopSignals` is active, either signal only raises a flag; training looks at it
after every step, every process agreeing (distributed.any_process: under torchrun only some processes
may get the signal), writes a checkpoint that resumes inside the epoch, and exits with EXIT_CODE.

DataLoader workers ignore both signals while training runs (`ignore_in_worker`): SLURM signals every
process of a job, and a worker that died of it would take the run down before the checkpoint. Once
training ends, normally or by an exception, a SIGTERM ends a worker again: multiprocessing's exit
handler terminates the daemonic workers with SIGTERM and waits for them, so a worker that ignored it
for good would make every crashed run hang at exit.
"""
import os
import signal

import torch

import distributed

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CODE = os.EX_TEMPFAIL  # 75, "temporary failure, try again": stopped on request, resumable


class StopSignals:
    """Within `with StopSignals() as stop:` SIGTERM and SIGUSR1 set `stop.received` instead of killing the
    process; the previous handlers come back on exit."""

    def __init__(self):
        self.received = None  # the signal's name once one arrived
        self._previous = {}
        # True while the block runs; shared with the DataLoader workers (give it to ignore_in_worker).
        self.shield = torch.zeros((), dtype=torch.bool).share_memory_()

    def __enter__(self):
        for number in SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        self.shield.fill_(True)
        return self

    def __exit__(self, *exc):
        self.shield.fill_(False)
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        return False

    def _handle(self, number, frame):
        self.received = signal.Signals(number).name

    def agreed(self, device):
        """Whether any process received a stop signal; a collective, called by every process at the same point."""
        return distributed.any_process(self.received is not None, device)


def ignore_in_worker(shield):
    """For DataLoader workers: while `shield` (StopSignals.shield) is set the main process decides when to
    stop and the worker must not die of a stop signal; after it, SIGTERM ends the worker as usual."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    def on_sigterm(number, frame):
        if not bool(shield):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
