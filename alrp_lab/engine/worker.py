"""Entry point of one torchrun process: train the run of a run folder.

``alrp-lab run train.nproc_per_node=N`` composes and validates the config once, writes it
to ``RUN_DIR/config.yaml`` and starts
``python -m torch.distributed.run --nproc_per_node N -m alrp_lab.engine.worker RUN_DIR``,
so Hydra runs in the parent only and every rank shares one run folder.

Across machines, start it with torchrun yourself and give the overrides instead (every
node composes the same config from them; RUN_DIR on a shared file system)::

    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m alrp_lab.engine.worker /shared/runs/r50 train.nnodes=2 train.nproc_per_node=4 \
        experiment=... data.root=...

(every process checks that ``WORLD_SIZE`` is ``train.nproc_per_node x train.nnodes``: the lr
rule scales with it).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
from pathlib import Path
from typing import IO, NoReturn

from omegaconf import OmegaConf

from alrp_lab.config import ConfigError, validate_config
from alrp_lab.config.compose import compose_config
from alrp_lab.engine.distributed import cleanup
from alrp_lab.engine.launch import crash_dump_path
from alrp_lab.engine.train import train

# Open for as long as the process lives: faulthandler writes to it from a signal handler.
_crash_dump: IO[str] | None = None


# Not @record: its error file gives rank 0's secondary "Connection closed by peer" a
# timestamp in whole seconds, and torchrun names the failure with the smallest one as the
# root cause, rank 0 on a tie, in place of the rank that died first.
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m alrp_lab.engine.worker RUN_DIR [OVERRIDES ...]", file=sys.stderr)
        return 2
    run_dir, overrides = Path(args[0]), args[1:]
    config_file = run_dir / "config.yaml"
    try:
        if overrides:
            cfg = compose_config(overrides)
        elif config_file.is_file():
            cfg = validate_config(OmegaConf.load(config_file))
        else:
            print(
                f"error: {config_file} does not exist: start runs with `alrp-lab run`, or give "
                "the run's overrides after RUN_DIR",
                file=sys.stderr,
            )
            return 2
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        train(cfg, run_dir)
    finally:
        cleanup()
    return 0


def dump_crashes(run_dir: Path) -> None:
    """Have faulthandler write this rank's threads' Python stacks to its own file in
    ``run_dir`` (:func:`~alrp_lab.engine.launch.crash_dump_path`) if a signal kills it, as a
    C++ abort inside torch does: the launcher's error then names the frame. One file per
    rank, since the ranks share torchrun.log and a dump names no rank."""
    global _crash_dump
    run_dir.mkdir(parents=True, exist_ok=True)
    _crash_dump = open(crash_dump_path(run_dir, int(os.environ.get("RANK", "0"))), "w")  # noqa: SIM115
    faulthandler.enable(_crash_dump, all_threads=True)


def leave(code: int) -> NoReturn:
    """End the process with ``code`` without the interpreter's teardown (after flushing
    the standard streams and logging).

    Once :func:`main` has returned, the run is on disk (``results.json`` written
    atomically, ``metrics.jsonl`` fsynced line by line, W&B finished) and the process group
    destroyed; what teardown would still do is free torch's C++ state. Twice in CI, with
    other trainings loading the machine, a rank that had passed the final barrier then
    died of SIGABRT with its main thread past its last Python frame (its faulthandler dump:
    ``<no Python frame>``), and torchrun reported the completed run as failed.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        dump_crashes(Path(sys.argv[1]))
    # An exception leaves the normal way (traceback, exit status 1).
    leave(main())
