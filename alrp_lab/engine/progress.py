"""Rich progress bars for a run: epochs, iterations of the current epoch, evaluation."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Three bars with ETA; a no-op when ``enabled`` is false (ranks other than 0)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._epochs: TaskID | None = None
        self._iters: TaskID | None = None
        self._eval: TaskID | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_epochs(self, total: int, completed: int = 0) -> None:
        if self._progress is not None:
            self._epochs = self._progress.add_task(
                "epochs", total=total, completed=completed, info=""
            )

    def start_iterations(self, total: int, epoch: int) -> None:
        if self._progress is None:
            return
        if self._iters is not None:
            self._progress.remove_task(self._iters)
        self._iters = self._progress.add_task(f"epoch {epoch + 1}", total=total, info="")

    def advance_iteration(self, loss: float) -> None:
        if self._progress is not None and self._iters is not None:
            self._progress.update(self._iters, advance=1, info=f"loss {loss:.4f}")

    def advance_epoch(self) -> None:
        if self._progress is not None and self._epochs is not None:
            self._progress.update(self._epochs, advance=1)

    def start_evaluation(self, total: int) -> None:
        if self._progress is not None:
            self._eval = self._progress.add_task("evaluation", total=total, info="")

    def advance_evaluation(self, images: int) -> None:
        if self._progress is not None and self._eval is not None:
            self._progress.update(self._eval, advance=images)
