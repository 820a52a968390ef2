"""The training loop: one function that turns a validated config into a finished run folder.

A run folder holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``grad_balance.csv``,
``checkpoints/last.pt`` (every epoch), ``detections_val.json`` and ``results.json``. Each
process of a torchrun job calls :func:`train` with the same resolved config; only rank 0
writes files and logs.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler

from alrp_lab.data.collate import collate_detection
from alrp_lab.engine.amp import MIN_LOSS_SCALE, autocast, check_amp, grad_scaler, scale_collapsed
from alrp_lab.engine.builders import build_datasets, build_model, model_signature
from alrp_lab.engine.checkpoint import load_checkpoint, save_checkpoint
from alrp_lab.engine.distributed import DistributedContext, init_distributed
from alrp_lab.engine.evaluate import evaluate_model, shard_indices
from alrp_lab.engine.finite import gradient_norm, state_is_finite
from alrp_lab.engine.progress import RunProgress
from alrp_lab.engine.schedule import learning_rate
from alrp_lab.errors import ConfigError, DataError, NonFiniteLossError, RunFolderError
from alrp_lab.tracking.code_digest import changed_packages, code_record
from alrp_lab.tracking.grad_balance import (
    GRAD_BALANCE_FILE,
    append_grad_balance,
    start_grad_balance,
    summarize_grad_balance,
)
from alrp_lab.tracking.results import (
    RESULTS_FILE,
    RunRecorder,
    checkpoint_path,
    is_completed,
    read_results,
)
from alrp_lab.tracking.run_files import is_run_config
from alrp_lab.tracking.staleness import differences
from alrp_lab.tracking.wandb_run import WandbRun
from alrp_lab.utils.io import atomic_write_json

log = logging.getLogger(__name__)


_RESUME_ADVICE = (
    "Training is deterministic, so resuming with the same settings repeats the same steps and "
    "diverges again: lower train.lr or lengthen train.warmup_iters, then start over or resume "
    "with train.resume=true"
)


def _kept(epoch: int) -> str:
    """What the checkpoint holds when epoch ``epoch`` (0-based) fails."""
    if epoch > 0:
        return f"checkpoints/last.pt keeps epoch {epoch}, with finite weights"
    return "no epoch had finished, so there is no checkpoint"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolve_device(name: str, ctx: DistributedContext) -> torch.device:
    if name == "auto":
        return ctx.device
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no GPU is visible: use train.device=cpu")
    return device


def _make_loader(dataset, cfg: DictConfig, ctx: DistributedContext, epoch: int) -> DataLoader:
    """A loader whose order depends only on (seed, epoch), so a resumed run sees the same
    batches as an uninterrupted one."""
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    sampler = None
    if ctx.world_size > 1:
        sampler = DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed
        )
        sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_detection,
        drop_last=False,
    )


def _memory_format(cfg: DictConfig) -> torch.memory_format:
    """The layout of the model's 4-D weights and of the images (train.channels_last)."""
    return torch.channels_last if cfg.train.channels_last else torch.contiguous_format


def _iterations_per_epoch(loader: DataLoader, cap: int | None) -> int:
    return len(loader) if cap is None else min(len(loader), cap)


def _to_device(targets: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [
        {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        for t in targets
    ]


def _step_balances(balances: list[Any], ctx: DistributedContext) -> None:
    """Re-estimate every SB (the detector's, and the RPN's for two-stage detectors)."""
    for each in balances:
        each.step_epoch(all_reduce=ctx.all_reduce_sum)


def _sums(balance: Any) -> list[float]:
    return [balance.sum_cls, balance.sum_loc, float(balance.count)]


def _check_data(cfg: DictConfig, train_set: Any, val_set: Any, ctx: DistributedContext) -> None:
    """Before any training: both splits have images whose headers decode, and boxes that
    cannot be used are reported once (they are dropped)."""
    for split, dataset in (("training", train_set), ("validation", val_set)):
        if len(dataset) == 0:
            raise DataError(
                f"the {split} split of {cfg.data.root} holds no images: check data.root and "
                "its annotation file (or data.num_train / data.num_val for the built-in set)"
            )
        dataset.check_images()
        invalid = dataset.count_invalid_boxes()
        if invalid and ctx.is_main:
            log.warning(
                "%s split: %d boxes with zero, negative or non-finite width or height are "
                "dropped, as COCO's tools do",
                split,
                invalid,
            )


def check_run_folder(run_dir: Path, resume: bool) -> None:
    """Refuse to start over in a folder that holds a completed run: its results would be
    replaced at once. Raises :class:`RunFolderError` naming the choices."""
    if resume or not is_completed(run_dir):
        return
    raise RunFolderError(
        f"{run_dir} holds a completed run: continue it with train.resume=true, run into "
        "another folder (hydra.run.dir=...), or delete this one to start over"
    )


def _resume_changes(run_dir: Path, config: dict[str, Any]) -> list[str]:
    """What a resume changes against the config the run recorded (``key: recorded X, now
    Y`` each; empty when nothing does, or when no config of a run was recorded: a sweep's
    record of a job that failed before training holds only its overrides), for
    results.json's attempts. Code that differs from the code of the earlier attempts is
    warned about too (each attempt records its own).

    A change is allowed (a diverged run may continue from its last finite checkpoint at a
    lower lr), but the run is then a mix of two configs, so it is also logged as a warning;
    a sweep refuses such a resume. More epochs are recorded but not warned about: the
    schedule's steps and warm-up do not depend on the total, so extending a run is the same
    run.
    """
    previous = read_results(run_dir) if (run_dir / RESULTS_FILE).is_file() else {}
    code = changed_packages(previous)
    if code:
        log.warning(
            "resuming %s with other code than its earlier attempts were trained with (in %s): "
            "its results will mix the two",
            run_dir,
            ", ".join(code),
        )
    recorded = previous.get("config")
    if not is_run_config(recorded):
        return []
    changes = differences(recorded, config)
    mixed = [str(each) for each in changes if each.key != "train.epochs"]
    if mixed:
        log.warning(
            "resuming %s with another config than it was started with (%s): its results will "
            "mix the two; start a new folder to keep one config per run",
            run_dir,
            "; ".join(mixed),
        )
    return [str(each) for each in changes]


class _Resumed(NamedTuple):
    """Where training starts: epoch and iteration (0, 0 for a new run) and the SB sums of a
    period still open at the checkpoint (None when there are none)."""

    epoch: int
    iteration: int
    sb_sums: list | None


def _match_layouts(optimizer) -> None:
    """Give every optimizer state tensor its parameter's memory layout: a checkpoint saved
    under the other ``train.channels_last`` loads its momentum in the old layout (the
    values are the same; a mixed layout only slows the step)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.dim() == 4:
                    layout = (
                        torch.channels_last
                        if param.is_contiguous(memory_format=torch.channels_last)
                        and not param.is_contiguous()
                        else torch.contiguous_format
                    )
                    state[key] = value.contiguous(memory_format=layout)


def _resume_or_start(
    cfg: DictConfig, ckpt_path: Path, model, optimizer, signature, ctx: DistributedContext, scaler
) -> _Resumed:
    """Load ``ckpt_path`` into the model and optimizer when ``train.resume`` asks for it."""
    if cfg.train.resume and ckpt_path.exists():
        # RNG streams are reseeded per (seed, rank, epoch) in the loop, so none are restored.
        state = load_checkpoint(
            ckpt_path,
            model=model,
            optimizer=optimizer,
            expected_signature=signature,
            restore_rng=False,
        )
        log.info("resumed from %s at epoch %d", ckpt_path, int(state["epoch"]))
        _match_layouts(optimizer)
        extra = state.get("extra") or {}
        if scaler.is_enabled() and extra.get("grad_scaler"):
            scaler.load_state_dict(extra["grad_scaler"])
        sums = extra.get("sb_sums")
        return _Resumed(int(state["epoch"]), int(state["iteration"]), sums)
    if not cfg.train.resume and ckpt_path.exists() and ctx.is_main:
        log.warning("%s exists; train.resume=false starts over and replaces it", ckpt_path)
    return _Resumed(0, 0, None)


def _restore_sb_sums(balances: list[Any], sums: list | None, ctx: DistributedContext) -> None:
    # Only rank 0's sums are saved: under torchrun with an sb_period that does not end on an
    # epoch, the other ranks restart their open period from zero.
    if sums and ctx.is_main:
        for each, saved in zip(balances, sums, strict=False):
            each.sum_cls, each.sum_loc, each.count = float(saved[0]), float(saved[1]), int(saved[2])


def _make_tracker(cfg: DictConfig, config: dict, run_dir: Path, ctx: DistributedContext):
    return WandbRun(
        mode=cfg.logger.mode,
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        job_type="train",
        tags=list(cfg.logger.tags) + _tags(cfg),
        config=config,
        dir=run_dir,
        name=cfg.name,
        rank=ctx.rank,
    )


@dataclass
class _Loop:
    """One run's training state and the steps that change it: an iteration, an epoch's
    end (SB, checkpoint, interim evaluation) and the final evaluation."""

    cfg: DictConfig
    ctx: DistributedContext
    device: torch.device
    model: Any
    ddp_model: Any
    optimizer: Any
    balances: list[Any]
    signature: dict[str, Any]
    ckpt_path: Path
    run_dir: Path
    recorder: RunRecorder
    tracker: Any
    progress: RunProgress
    grad_csv: Path | None
    iteration: int
    scaler: Any

    def step(self, images, targets, epoch: int, step: int, n_iters: int, tic: float) -> None:
        """One SGD step on a batch; raises :class:`NonFiniteLossError` before a bad step."""
        cfg, model = self.cfg, self.model
        lr = learning_rate(
            cfg.train.lr,
            self.iteration,
            epoch,
            warmup_iters=cfg.train.warmup_iters,
            warmup_ratio=cfg.train.warmup_ratio,
            lr_steps=cfg.train.lr_steps,
            lr_decay=cfg.train.lr_decay,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True, memory_format=_memory_format(cfg))
        sizes = [tuple(int(v) for v in t["size"]) for t in targets]
        with autocast(cfg.train.amp, self.device):
            losses = self.ddp_model(images, _to_device(targets, self.device), image_sizes=sizes)
        loss = losses["loss"]
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(
                f"the loss became {loss.item()} at epoch {epoch + 1}, iteration "
                f"{self.iteration}; {_kept(epoch)}. {_RESUME_ADVICE}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        # With fp16 the scaler multiplies the loss and divides the gradients back before the
        # norm; otherwise these calls pass straight through.
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if cfg.train.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        else:
            norm = gradient_norm(model.parameters())
        if not torch.isfinite(norm) and not self.scaler.is_enabled():
            # Detected before the step: the weights stay as they were. (With fp16 an overflow
            # is the scaler's signal: it skips this step and lowers its scale.)
            raise NonFiniteLossError(
                f"the gradient became non-finite at epoch {epoch + 1}, iteration "
                f"{self.iteration} (the loss was {loss.item():.4g}); "
                f"{_kept(epoch)}. {_RESUME_ADVICE}"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        collapsed = scale_collapsed(self.scaler)
        if collapsed is not None:
            # Every step since the scale left its normal range was skipped: the weights are
            # those of the last finite step, and the run would skip every step to the end.
            raise NonFiniteLossError(
                f"fp16's loss scale fell to {collapsed:.3g} (below {MIN_LOSS_SCALE:g}) at "
                f"epoch {epoch + 1}, iteration {self.iteration}: the gradients stayed "
                f"non-finite at every scale tried; {_kept(epoch)}. {_RESUME_ADVICE}"
            )
        # Before loss.sb_start, SB records nothing: it keeps sb_init, and the first estimate
        # comes from a head that has left its initial state.
        if cfg.loss.sb_start is None or self.iteration >= cfg.loss.sb_start:
            model.update_self_balance(losses)
        ratio = model.grad_balance() if self.grad_csv is not None else None
        if self.grad_csv is not None and ratio is not None:
            append_grad_balance(self.grad_csv, self.iteration, epoch, ratio)
        if self.iteration % cfg.train.log_every == 0 or step == n_iters - 1:
            self._log(losses, loss, lr, epoch, step, tic, ratio, float(norm))
        self.progress.advance_iteration(float(loss.detach()))
        self.iteration += 1
        period = cfg.loss.sb_period
        if period is not None and self.iteration % period == 0:
            _step_balances(self.balances, self.ctx)

    def _log(
        self, losses, loss, lr: float, epoch: int, step: int, tic: float, ratio, norm: float
    ) -> None:
        record = {
            "epoch": epoch,
            "loss": float(loss.detach()),
            "loss_cls": float(losses["loss_cls"].detach()),
            "loss_loc": float(losses["loss_loc"].detach()),
            "loc_weight": self.balances[0].value,
            "num_pos": float(losses["num_pos"]),
            "lr": lr,
            # Before clipping: above train.grad_clip, the clip acted on this step.
            "grad_norm": norm,
            "sec_per_iter": (time.perf_counter() - tic) / (step + 1),
        }
        if ratio is not None:
            record["grad_balance"] = ratio
        for key in ("eloc_mean", "eloc_over_one"):  # aLRP's localisation diagnostics
            if key in losses:
                record[key] = float(losses[key])
        self.recorder.log(self.iteration, record)
        self.tracker.log({f"train/{k}": v for k, v in record.items()}, step=self.iteration)

    def end_epoch(self, epoch: int, val_set: Any) -> None:
        """SB's epoch estimate, the finite-state check, the checkpoint, interim evaluation."""
        cfg, ctx = self.cfg, self.ctx
        if cfg.loss.sb_period is None:
            _step_balances(self.balances, ctx)
        weight = self.balances[0].value
        self.tracker.log({"train/sb_weight": weight, "epoch": epoch + 1}, step=self.iteration)
        if not state_is_finite(self.model, self.optimizer):
            raise NonFiniteLossError(
                f"the weights or optimiser state became non-finite during epoch "
                f"{epoch + 1}; {_kept(epoch)}. {_RESUME_ADVICE}"
            )
        if ctx.is_main:
            save_checkpoint(
                self.ckpt_path,
                model=self.model,
                optimizer=self.optimizer,
                epoch=epoch + 1,
                iteration=self.iteration,
                # Sums of an SB period still open (sb_period not a whole epoch).
                extra={
                    "sb_weight": weight,
                    "sb_sums": [_sums(b) for b in self.balances],
                    # fp16's loss scale, so that a resumed run scales as it would have.
                    **(
                        {"grad_scaler": self.scaler.state_dict()}
                        if self.scaler.is_enabled()
                        else {}
                    ),
                },
                model_signature=self.signature,
            )
        ctx.barrier()
        self.progress.advance_epoch()
        every, epochs = cfg.train.eval_every, cfg.train.epochs
        if every > 0 and (epoch + 1) % every == 0 and epoch + 1 < epochs:
            # Every process evaluates its shard; rank 0 scores the merged detections.
            interim, _ = evaluate_model(
                self.model, val_set, device=self.device, batch_size=cfg.train.batch_size, ctx=ctx
            )
            if ctx.is_main:
                # Stamped with the epoch's last iteration, which the checkpoint covers.
                last = self.iteration - 1
                self.recorder.log(last, {"epoch": epoch + 1, **_prefixed("val/", interim)})
                self.tracker.log(_prefixed("val/", interim), step=last)
        ctx.barrier()

    def evaluate(self, val_set: Any) -> dict[str, float]:
        """The final evaluation, sharded across the processes and scored on rank 0 (the
        metrics there, {} elsewhere), with its detections file."""
        ctx = self.ctx
        self.progress.start_evaluation(len(shard_indices(len(val_set), ctx.rank, ctx.world_size)))
        metrics, detections = evaluate_model(
            self.model,
            val_set,
            device=self.device,
            batch_size=self.cfg.train.batch_size,
            bounds=self.cfg.train.eval_bounds,
            on_batch=self.progress.advance_evaluation,
            ctx=ctx,
        )
        if ctx.is_main:
            atomic_write_json(self.run_dir / "detections_val.json", detections)
        ctx.barrier()
        return metrics


def check_world_size(cfg: DictConfig, world_size: int) -> None:
    """Refuse a run whose processes (``WORLD_SIZE``) are not the config's
    ``train.nproc_per_node x train.nnodes``: the lr rule scales with that product and the
    recorded config would misstate the run."""
    expected = cfg.train.nproc_per_node * cfg.train.nnodes
    if world_size != expected:
        raise ConfigError(
            f"this run has {world_size} process(es) but the config asks for "
            f"train.nproc_per_node={cfg.train.nproc_per_node} x train.nnodes={cfg.train.nnodes}"
            f" = {expected}: give the overrides torchrun's values (--nproc_per_node and "
            "--nnodes), e.g. train.nproc_per_node=4 train.nnodes=2"
        )


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate the experiment ``cfg`` (validated) into ``run_dir``.

    Returns the final ``results.json`` content. Raises :class:`NonFiniteLossError` when the
    loss diverges (``results.json`` then says ``failed`` and why) and
    :class:`RunFolderError` before touching ``run_dir`` when it holds a completed run and
    ``train.resume`` is false.
    """
    ctx = init_distributed()
    if ctx.is_main:
        # Digest the code now (cached for the process), so that an edit made while the data
        # and model are built is not recorded as the code that trained.
        code_record()
    check_world_size(cfg, ctx.world_size)
    device = _resolve_device(cfg.train.device, ctx)
    check_amp(cfg.train.amp, device)
    run_dir = Path(run_dir)
    check_run_folder(run_dir, bool(cfg.train.resume))
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    recorder = RunRecorder(run_dir, config_dict, enabled=ctx.is_main)

    _seed_everything(cfg.seed)
    train_set, val_set = build_datasets(cfg.data, ctx=ctx)
    _check_data(cfg, train_set, val_set, ctx)
    model = build_model(cfg, num_classes=train_set.num_classes)
    # Evaluation needs no conversion of its images: a convolution whose weight is
    # channels-last computes (and returns) channels-last.
    model = model.to(device, memory_format=_memory_format(cfg))
    signature = model_signature(cfg, train_set.num_classes)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=cfg.train.weight_decay,
    )
    ckpt_path = checkpoint_path(run_dir)
    scaler = grad_scaler(cfg.train.amp, device)
    resumed = _resume_or_start(cfg, ckpt_path, model, optimizer, signature, ctx, scaler)
    changes: list[str] = []
    if ctx.is_main and resumed.epoch > 0:
        # After the checkpoint was accepted: a refused resume writes nothing.
        changes = _resume_changes(run_dir, config_dict)
    if ctx.is_main:
        # Only now: a refused resume (above) leaves the folder as it was.
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    ddp_model = model
    if ctx.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # SelfBalance, or a disabled one holding the constant wr; saved with the model. Two-stage
    # detectors keep a second one for the RPN; every detector lists its own.
    balances = model.loc_weights()
    _restore_sb_sums(balances, resumed.sb_sums, ctx)

    tracker = _make_tracker(cfg, config_dict, run_dir, ctx)
    resume_step = resumed.iteration if resumed.epoch > 0 else None
    recorder.start(resume_step=resume_step, changed=changes)
    grad_csv = (run_dir / GRAD_BALANCE_FILE) if ctx.is_main and cfg.train.grad_balance else None
    if grad_csv is not None:
        # A resume cuts the lines the stopped run wrote after its checkpoint.
        start_grad_balance(grad_csv, resume_step)

    progress = RunProgress(enabled=ctx.is_main)
    loop = _Loop(
        cfg, ctx, device, model, ddp_model, optimizer, balances, signature, ckpt_path,
        run_dir, recorder, tracker, progress, grad_csv, resumed.iteration, scaler,
    )  # fmt: skip
    epochs = cfg.train.epochs
    try:
        with progress:
            progress.start_epochs(epochs, completed=resumed.epoch)
            for epoch in range(resumed.epoch, epochs):
                # Augmentation draws from the global RNGs: seeding them per epoch makes a
                # resumed run replay exactly what an uninterrupted one would have seen.
                _seed_everything((cfg.seed * 100_003 + epoch) * 64 + ctx.rank)
                loader = _make_loader(train_set, cfg, ctx, epoch)
                n_iters = _iterations_per_epoch(loader, cfg.train.max_iters_per_epoch)
                progress.start_iterations(n_iters, epoch)
                ddp_model.train()
                tic = time.perf_counter()
                for step, (images, targets) in enumerate(loader):
                    if step >= n_iters:
                        break
                    loop.step(images, targets, epoch, step, n_iters, tic)
                loop.end_epoch(epoch, val_set)
            metrics = loop.evaluate(val_set)
    except BaseException as err:
        recorder.fail(err)
        tracker.finish(exit_code=1)
        raise
    # The ratio's range, for copies that keep only results.json; None (not the previous
    # attempt's range, which results.json carries over) when this attempt wrote no csv.
    balance = summarize_grad_balance(run_dir) if grad_csv is not None else None
    extra = {"epochs": epochs, "iterations": loop.iteration, "grad_balance": balance}
    results = recorder.complete(metrics, extra=extra)
    # No rank leaves before rank 0 has recorded the run: torchrun stops every process as
    # soon as one dies, so a rank that crashed on its way out (inside torch) would otherwise
    # take rank 0 down before results.json said completed.
    ctx.barrier()
    tracker.summary(_prefixed("val/", metrics))
    tracker.finish()
    return results


def _prefixed(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items() if _is_number(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def _tags(cfg: DictConfig) -> list[str]:
    balance = "sb" if cfg.loss.self_balance else f"wr={cfg.loss.wr}"
    return [
        f"detector:{cfg.detector.name}",
        f"loss:{cfg.loss.name}",
        f"box_error:{cfg.box_error.name}",
        f"assigner:{cfg.assigner.name}",
        balance,
    ]
