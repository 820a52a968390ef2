"""A W&B run that can never stop training.

W&B mirrors the results files (:mod:`alrp_lab.tracking.results`); it is never the only copy.
So a W&B failure - the package missing, no network, a full disk, a bug in wandb - is logged
once as a warning and turns the wrapper into a no-op for the rest of the run. Only rank 0
creates a real run, and ``wandb`` is imported lazily (it takes seconds) and only when a run
is actually made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
# Older spellings wandb itself still accepts in WANDB_MODE.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}

__all__ = ["MODES", "WandbRun", "resolve_mode"]


def resolve_mode(mode: str) -> str:
    """The mode to use: the ``WANDB_MODE`` environment variable when set, else ``mode``.

    The variable wins because it is how a machine (CI, a cluster without network) opts out
    whatever the config says. Raises :class:`ValueError` for an unknown mode.
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        resolved = _MODE_ALIASES.get(env, env)
        if resolved not in MODES:
            raise ValueError(
                f"WANDB_MODE={env!r} is not one of {', '.join(MODES)}: fix or unset it"
            )
        return resolved
    if mode not in MODES:
        raise ValueError(f"logger.mode={mode!r} is not one of {', '.join(MODES)}")
    return mode


INIT_TIMEOUT_S = 15.0


class WandbRun:
    """Rank-0 W&B run whose every call is guarded; inactive elsewhere.

    Args:
        enabled: False turns W&B off whatever the mode.
        mode: ``"offline"`` (default: files under ``dir``, sync later), ``"online"`` or
            ``"disabled"``; overridden by the ``WANDB_MODE`` environment variable.
        project, group, job_type, tags, name, entity: passed to ``wandb.init``.
        config: the resolved config, shown in the W&B UI.
        dir: folder for W&B's files (usually the run folder); created if missing.
        rank: this process's rank; only rank 0 makes a run.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        mode: str = "offline",
        project: str = "alrp-lab",
        group: str | None = None,
        job_type: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        dir: str | os.PathLike[str] | None = None,  # wandb.init's name for it
        name: str | None = None,
        entity: str | None = None,
        rank: int = 0,
    ):
        self.mode = resolve_mode(mode)
        self._run: Any = None
        self._wandb: Any = None
        if not enabled or rank != 0 or self.mode == "disabled":
            return

        def init() -> None:
            import wandb  # lazy: slow to import, and may be missing

            if dir is not None:
                Path(dir).mkdir(parents=True, exist_ok=True)
            self._wandb = wandb
            self._run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                job_type=job_type,
                tags=list(tags),
                config=dict(config) if config is not None else None,
                dir=str(dir) if dir is not None else None,
                name=name,
                mode=self.mode,
                # Online without a network, wandb waits about 100 s by default before it
                # gives up: a short wait, then training goes on without it.
                settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S),
            )
            if self._run is None:
                raise RuntimeError("wandb.init returned no run")

        self._guard("init", init, needs_run=False)

    @property
    def active(self) -> bool:
        """True while a real W&B run is receiving calls."""
        return self._run is not None

    def _guard(self, what: str, call: Callable[[], object], *, needs_run: bool = True) -> None:
        if needs_run and self._run is None:
            return
        try:
            call()
        except Exception as err:  # any W&B failure must leave training running
            log.warning(
                "W&B %s failed (%s: %s); W&B logging is off for the rest of this run, the "
                "results files are unaffected",
                what,
                type(err).__name__,
                err,
            )
            self._run = None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log ``metrics`` (name -> number) at ``step``."""
        self._guard("log", lambda: self._run.log(dict(metrics), step=step))

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set run summary values (the final numbers shown in W&B's run table)."""

        def update() -> None:
            for key, value in values.items():
                self._run.summary[key] = value

        self._guard("summary", update)

    def log_table(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Log a table, ``rows`` each with one value per column."""

        def table() -> None:
            data = [list(row) for row in rows]
            self._run.log({name: self._wandb.Table(columns=list(columns), data=data)})

        self._guard("log_table", table)

    def log_image(self, name: str, path: str | os.PathLike[str]) -> None:
        """Log the image file at ``path``; a missing file is skipped with a warning."""
        if self._run is None:
            return
        if not Path(path).is_file():
            # Our own bug, not W&B's: skip this image but keep the run.
            log.warning("W&B log_image: %s does not exist, not logged", path)
            return
        self._guard("log_image", lambda: self._run.log({name: self._wandb.Image(str(path))}))

    def finish(self, exit_code: int | None = None) -> None:
        """Close the run (idempotent); a nonzero ``exit_code`` marks it failed in W&B."""
        self._guard("finish", lambda: self._run.finish(exit_code=exit_code))
        self._run = None

    def __enter__(self) -> WandbRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc is None else 1)
