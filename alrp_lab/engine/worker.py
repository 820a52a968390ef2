"""Entry point of one torchrun process: read a run folder's resolved config and train.

``alrp-lab run train.nproc_per_node=N`` composes and validates the config once, writes it
to ``RUN_DIR/config.yaml`` and starts
``python -m torch.distributed.run --nproc_per_node N -m alrp_lab.engine.worker RUN_DIR``,
so Hydra runs in the parent only and every rank shares one run folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from alrp_lab.config import validate_config
from alrp_lab.engine.distributed import cleanup
from alrp_lab.engine.train import train


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m alrp_lab.engine.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        print(
            f"error: {config_file} does not exist: start runs with `alrp-lab run`", file=sys.stderr
        )
        return 2
    cfg = validate_config(OmegaConf.load(config_file))
    try:
        train(cfg, run_dir)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
