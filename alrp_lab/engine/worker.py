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
import sys
from pathlib import Path

from omegaconf import OmegaConf

from alrp_lab.config import ConfigError, validate_config
from alrp_lab.config.compose import compose_config
from alrp_lab.engine.distributed import barrier, cleanup
from alrp_lab.engine.train import train


# Not @record: the error file it writes carries a timestamp in whole seconds, and torchrun
# takes the failure with the smallest one as the root cause (rank 0 on a tie), so rank 0's
# "Connection closed by peer" would be reported in place of the rank that died first.
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
        # No rank tears down before rank 0 has recorded the run: torchrun stops every
        # process as soon as one dies, so a rank that crashed on its way out (inside torch)
        # would otherwise take rank 0 down before results.json said completed.
        barrier()
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    # A rank that a signal kills (a C++ abort inside torch) gets its threads' Python stacks
    # written to stderr, which torchrun.log keeps: the launcher's error names the frame.
    faulthandler.enable(all_threads=True)
    sys.exit(main())
