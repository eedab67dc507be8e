"""Training: the published schedule for every configuration, resumable, on 1..N processes.

One :class:`Trainer` runs the same way in a single process and under
``torchrun --nproc_per_node=K`` (DistributedDataParallel, gloo on CPU, NCCL on CUDA):

* ``train.batch_size`` is the **global** batch (videos per optimiser step over all
  processes), as in the authors' DataParallel scripts; each process takes
  ``batch_size / world_size`` videos of every step, chosen so that the union over
  processes is exactly the batch a single process would take.
* AdamW, the backbone frozen for ``freeze_backbone_epochs`` epochs, validation from
  ``eval_start_epoch`` every ``eval_every`` epochs with the best checkpoint chosen by
  validation mIoU, as recorded in the authors' configurations.
* ``last.safetensors`` holds everything needed to continue (weights, optimiser,
  schedule, scaler, counters, every process's random generators); it is written
  atomically every ``save_every_steps`` steps and at the end of each epoch. Resuming
  continues mid-epoch and ends with the same weights as an uninterrupted run.
* Mixed precision on CUDA (bfloat16 autocast, or float16 with a gradient scaler);
  plain float32 on CPU unless asked otherwise.

How long a run is (:attr:`Trainer.total_steps`, the end of the learning-rate schedule):
``train.epochs`` passes over the training set, or exactly ``max_steps`` optimiser steps
when that is given (as many epochs as that takes; the schedule is sized to it).
``resume`` continues a run to the same end. With a changed end (``train.epochs`` or
``max_steps`` differing from the saved run's) the schedule is recomputed for the new end
and the learning rate follows it from the restored step; the log says so. A run resumed
at its end trains nothing and says that it is finished. Epochs are numbered from 1 in
everything written (console, ``log.jsonl``/``log.csv``, ``train_summary.json``).

Nothing is lost or silently wrong:

* A run folder that holds a run is continued (``resume``) or replaced (``overwrite``,
  which removes only the files a run writes, :data:`RUN_FILES`), never mixed into.
* A NaN or infinite loss or gradient norm stops the run at that step
  (:class:`~avsegformer.errors.NonFiniteError` naming the step, the epoch and which),
  before the update; ``train.nonfinite="skip"`` skips such steps instead (no update,
  counted), up to :data:`MAX_CONSECUTIVE_NONFINITE` in a row. float16 gradient-scaler
  overflow steps are skipped and counted as usual. Weights are checked before every
  checkpoint and every validation, so no checkpoint and no score comes from non-finite
  weights; the logs hold ``null`` (and a ``nonfinite`` list) where a value was NaN.
* A clip whose files cannot be read stops the run with its own one-line error, or with
  ``skip_bad_clips`` is left out and listed in ``train_summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..checkpoint import UNUSED_PREFIXES, load_checkpoint, read_checkpoint, save_checkpoint
from ..configuration import resolve_config
from ..data import PixelNorm, collate
from ..errors import CheckpointError, ConfigError, DataError, NonFiniteError, OutputExistsError
from ..fileio import atomic_write_text, check_writable, remove_path, sweep_stale_temporaries
from ..finite import json_safe
from ..modeling.audio_encoders import audio_front_end
from ..modeling.build import build_model
from ..modeling.optimize import optimize
from ..progress import progress_bar
from ..tasks import get_task
from ..zoo import Config
from . import dist
from .evaluator import (
    EvalResult,
    evaluate,
    model_inputs,
)
from .loading import (
    BadClipPolicy,
    GuardedDataset,
    SkippedClip,
    guarded_collate,
    merge_skipped,
    video_id_of,
)
from .run_log import RunLogger
from .train_state import (
    capture_rng_state,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    restore_rng_state,
)

logger = logging.getLogger(__name__)

LAST = "last.safetensors"
BEST = "best.safetensors"
#: What a training run writes in its folder (``overwrite`` removes these and nothing else).
RUN_FILES = (
    LAST, BEST, "config.json", "log.jsonl", "log.csv", "curves.png", "train_summary.json",
    "tensorboard",
)  # fmt: skip
#: With ``train.nonfinite="skip"`` (or float16 overflows): this many non-finite steps in
#: a row stop the run anyway; the weights are not recovering.
MAX_CONSECUTIVE_NONFINITE = 20


@dataclass
class TrainOptions:
    """How to run a training (where, how long, what to start from); not the recipe."""

    data_root: str | os.PathLike[str]
    out_dir: str | os.PathLike[str]
    resume: bool = False
    # Pretrained parts (resnet50-19c8e357.pth, pvt_v2_b5.pth, vggish-10086976.pth) or a
    # whole checkpoint to fine-tune from.
    pretrained: Sequence[str | os.PathLike[str]] = ()
    device: str | None = None
    # Exactly this many optimiser steps (the schedule is sized to it), instead of
    # train.epochs. With resume: None keeps the saved run's end.
    max_steps: int | None = None
    save_every_steps: int = 200
    log_every_steps: int = 20
    val_split: str = "val"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    # Called after every optimiser step with the trainer (tests use it to simulate a crash).
    on_step_end: Callable[[Trainer], None] | None = None
    # Start again in an out_dir that holds a run (its run files are removed first).
    overwrite: bool = False
    # Leave out clips whose files cannot be read (listed in TrainResult.skipped_clips).
    skip_bad_clips: bool = False


@dataclass
class TrainResult:
    """Summary of :meth:`Trainer.fit` (``train_summary.json``); epochs count from 1,
    ``best_epoch`` is 0 when nothing was validated; mIoU and F are fractions in [0, 1]."""

    out_dir: str
    epochs: int
    steps: int
    best_miou: float
    best_fscore: float
    best_epoch: int
    last_checkpoint: str
    best_checkpoint: str | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    total_steps: int = 0
    # True when the run was already at its end (a resume with nothing left to train).
    already_finished: bool = False
    # Steps without an update: non-finite loss/gradient (train.nonfinite="skip") and
    # float16 gradient-scaler overflows; over the whole run, resumes included.
    nonfinite_skipped_steps: int = 0
    overflow_skipped_steps: int = 0
    # Clips left out by skip_bad_clips: {"video_id", "reason", "times"} each.
    skipped_clips: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Progress:
    """Counters saved with every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimiser steps done in ``epoch``
    global_step: int = 0
    best_miou: float = -1.0
    best_fscore: float = 0.0
    best_epoch: int = -1
    nonfinite_skipped: int = 0
    overflow_skipped: int = 0


class EpochSampler(Sampler[int]):
    """This process's share of a seeded per-epoch permutation, from a given position.

    The permutation of epoch ``e`` depends only on ``seed + e``; it is padded (by
    repeating its start) to a multiple of ``world_size`` and process ``rank`` takes
    positions ``rank, rank + world_size, ...``. So ``K`` processes taking ``b`` items per
    step together take exactly the ``K * b`` items one process would take per step.
    """

    def __init__(self, n: int, *, rank: int, world_size: int, seed: int, shuffle: bool = True):
        self.n, self.rank, self.world_size = n, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.start = 0  # items of this process's share to skip (resume mid-epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        padded = math.ceil(self.n / self.world_size) * self.world_size
        order += order[: padded - self.n]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world_size) - self.start)


class Trainer:
    """Trains ``config`` on the dataset under ``options.data_root``; see the module doc."""

    def __init__(self, config: Config, options: TrainOptions) -> None:
        self.options = options
        self.out_dir = Path(options.out_dir)
        self.info = dist.current_info()
        self.device = torch.device(options.device) if options.device else self.info.device
        last = self.out_dir / LAST
        saved: Any = None
        check_writable(self.out_dir, what="run folder", folder=True)
        if self.info.is_main:
            sweep_stale_temporaries(self.out_dir)  # e.g. a checkpoint save killed midway
        previous_run = self._previous_run_files()
        if previous_run and not (options.resume or options.overwrite):
            raise OutputExistsError(
                f"{self.out_dir} holds a training run ({', '.join(previous_run)})",
                hint="resume=True continues it, overwrite=True starts again"
                if LAST in previous_run
                else f"it has no {LAST} to resume from: overwrite=True starts again",
                cli_hint="pass --resume to continue it or --overwrite to start again"
                if LAST in previous_run
                else f"it has no {LAST} to resume from: pass --overwrite to start again",
            )
        if options.resume and options.overwrite:
            raise ConfigError("resume and overwrite exclude each other: choose one")
        # Every process has seen the folder as it was before the main one writes in it.
        dist.barrier()
        if options.resume:
            if not last.is_file():
                raise CheckpointError(
                    f"nothing to resume: {last} does not exist (start without --resume)"
                )
            saved = read_checkpoint(last)
            if saved.metadata.get("kind") != "training_state":
                raise CheckpointError(
                    f"{last} is not a training state written by avsegformer train"
                )
            resolved = resolve_config(config, checkpoint=last, recorded=saved.config, resume=True)
            for note in resolved.notes:
                logger.warning("%s", note)
            config = resolved.config
        if options.max_steps is not None and options.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {options.max_steps}")
        self.config = config
        cfg = config.train
        self.task = get_task(config.data.task)
        #: What the audio encoder takes: the datasets' audio and ``audio="zero"`` silence.
        self.audio_front_end = audio_front_end(config)
        world = self.info.world_size
        if cfg.batch_size % world:
            raise ConfigError(
                f"train.batch_size={cfg.batch_size} (the global batch) is not divisible by "
                f"the {world} processes; choose a multiple of {world}"
            )
        self.local_batch = cfg.batch_size // world
        torch.manual_seed(cfg.seed + self.info.rank)

        self.model = self._build_model()
        self.criterion = self.task.loss(
            loss_type=cfg.loss_type,
            iou_loss_weight=cfg.iou_loss_weight,
            mix_loss_weight=cfg.mix_loss_weight,
            frames_per_clip=config.data.frames_per_clip,
        )
        self.train_set = self._dataset("train")
        self.val_set = self._dataset(options.val_split) if options.val_split else None
        if saved is not None:
            self._check_same_data(last, saved.metadata)
        self.bad_clips = BadClipPolicy(skip=options.skip_bad_clips)
        self._consecutive_nonfinite = 0
        self._last_saved_step: int | None = None
        self.sampler = EpochSampler(
            len(self.train_set), rank=self.info.rank, world_size=world, seed=cfg.seed
        )
        self.optimizer = torch.optim.AdamW(
            optimised_parameters(self.model),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            # One kernel for all parameters on CUDA instead of a few per tensor.
            fused=self.device.type == "cuda",
        )
        self.steps_per_epoch = len(self.sampler) // self.local_batch + (
            1 if len(self.sampler) % self.local_batch else 0
        )
        self.max_steps, self.total_steps, self._schedule_note = self._schedule_end(saved)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LearningRateSchedule(cfg.scheduler, cfg.warmup_steps, self.total_steps)
        )
        self.autocast_dtype = cfg.precision.resolve(self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.autocast_dtype == torch.float16
        )
        self.progress = Progress()
        self.log = RunLogger(self.out_dir, enabled=self.info.is_main)
        self._wrapped: nn.Module | None = None
        self._wrapped_frozen: bool | None = None
        if saved is not None:
            self._restore(last, saved)
            self._last_saved_step = self.progress.global_step
        elif self.info.is_main:
            if previous_run:  # overwrite, now that everything else has been checked
                logger.warning("--overwrite: removing the previous run's %s from %s",
                               ", ".join(previous_run), self.out_dir)  # fmt: skip
                for name in previous_run:
                    remove_path(self.out_dir / name)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "config.json", config.to_json())
        if self.info.is_main:
            self._describe_schedule()

    def _previous_run_files(self) -> list[str]:
        """The run files (:data:`RUN_FILES`) already in the run folder."""
        return [name for name in RUN_FILES if (self.out_dir / name).exists()]

    def _check_same_data(self, last: Path, meta: dict[str, Any]) -> None:
        """Warn when a resumed run is given other data than it recorded.

        A warning, not an error: the same dataset at another path (another machine, a
        moved disk) is a legitimate resume; the clip count tells the two cases apart.
        """
        recorded_root = meta.get("data_root")
        root = str(Path(self.options.data_root).resolve())
        recorded_clips = meta.get("train_clips")
        clips = len(self.train_set)  # type: ignore[arg-type]
        if self.info.is_main and recorded_root and recorded_root != root:
            same = recorded_clips == clips
            logger.warning(
                "resuming %s with --data-root %s, but the run was trained on %s%s",
                last, root, recorded_root,
                " (the training split has the same number of clips)" if same
                else f" (training clips: {clips} now, {recorded_clips} recorded; the "
                "resumed epoch position refers to the recorded data)",
            )  # fmt: skip
        elif self.info.is_main and recorded_clips is not None and recorded_clips != clips:
            logger.warning(
                "resuming %s: the training split under %s now has %d clips, the run "
                "recorded %d; the resumed epoch position refers to the recorded data",
                last, root, clips, recorded_clips,
            )  # fmt: skip

    # ------------------------------------------------------------------ building
    def _build_model(self) -> nn.Module:
        model = build_model(self.config)
        for path in self.options.pretrained:
            report = load_checkpoint(model, path)
            if self.info.is_main:
                logger.info("%s", report)
        _freeze_unused_modules(model)
        if self.config.train.sync_bn and self.info.world_size > 1:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_bn needs CUDA; on CPU use train.freeze_bn=true")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # Training forms and float32 islands for the device (Triton deformable
        # attention on CUDA); the modules stay the plain, autograd-exact ones.
        dtype = self.config.train.precision.resolve(self.device)
        return optimize(model, self.device, dtype, for_training=True)

    def _dataset(self, split: str) -> Dataset:
        options: dict[str, Any] = {
            "img_size": self.config.data.img_size,
            "audio_front_end": self.audio_front_end,
            "pixel_norm": PixelNorm.for_model(self.config.model),
        }
        if (
            split == "train"
            and self.task.skips_unlabelled_frames
            and self.config.train.train_frames == "labelled"
        ):
            options["skip_unlabelled_frames"] = True  # dropped before the forward anyway
        options.update(self.options.dataset_options)
        dataset = self.task.dataset(self.options.data_root, split, **options)
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise DataError(f"the {split} split under {self.options.data_root} has no videos")
        return dataset

    def _schedule_end(self, saved: Any) -> tuple[int | None, int, str]:
        """(max_steps in force, the step the run ends at, a note when a resume moved it)."""
        natural = self.steps_per_epoch * self.config.train.epochs
        requested = self.options.max_steps
        if saved is None:
            return requested, requested or natural, ""
        schedule = saved.metadata.get("schedule") or {}
        recorded_end = int(schedule.get("total_steps") or natural)
        recorded_max = schedule.get("max_steps")
        saved_epochs = int(schedule.get("epochs") or saved.config.train.epochs)
        if requested is not None:
            max_steps, end = requested, requested
        elif self.config.train.epochs != saved_epochs:
            max_steps, end = None, natural  # the new epochs define the end
        else:
            max_steps, end = recorded_max, recorded_end
        note = ""
        if end != recorded_end:
            how = (
                f"max_steps={requested}"
                if requested is not None
                else (f"epochs={self.config.train.epochs} (was {saved_epochs})")
            )
            note = (
                f"schedule changed by {how}: it now ends at step {end} instead of "
                f"{recorded_end}; the learning rate follows the recomputed schedule from "
                "the restored step"
            )
        return max_steps, end, note

    def _describe_schedule(self) -> None:
        cfg = self.config.train
        total, per_epoch = self.total_steps, self.steps_per_epoch
        epochs = math.ceil(total / per_epoch)
        source = (
            f"max_steps={self.max_steps}; epochs={cfg.epochs} would be {per_epoch * cfg.epochs}"
            if self.max_steps is not None
            else f"epochs={cfg.epochs}"
        )
        logger.info(
            "schedule: %d steps (%d epoch%s of %d steps; %s), %s learning rate %g, "
            "warm-up %d steps",
            total, epochs, "s" if epochs != 1 else "", per_epoch, source, cfg.scheduler,
            cfg.lr, cfg.warmup_steps,
        )  # fmt: skip
        if cfg.warmup_steps >= total:
            logger.warning(
                "the warm-up (%d steps) is as long as the whole run (%d steps): the learning "
                "rate never reaches its base value %g",
                cfg.warmup_steps,
                total,
                cfg.lr,
            )

    # ------------------------------------------------------------------ model phases
    def _set_phase(self, epoch: int) -> nn.Module:
        """Freeze or unfreeze the backbone for ``epoch`` and (re)wrap in DDP if needed."""
        frozen = epoch < self.config.train.freeze_backbone_epochs
        if self._wrapped is not None and self._wrapped_frozen == frozen:
            return self._wrapped
        self.model.freeze_backbone(frozen)  # type: ignore[operator]
        _freeze_unused_modules(self.model)  # unfreezing the backbone unfroze them too
        wrapped: nn.Module = self.model
        if self.info.world_size > 1:
            # DDP only tracks parameters that require grad when it is built, hence a new
            # wrapper whenever the frozen set changes.
            wrapped = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self._wrapped, self._wrapped_frozen = wrapped, frozen
        return wrapped

    def _train_mode(self) -> None:
        self.model.train()
        if self.config.train.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # ------------------------------------------------------------------ training
    def fit(self) -> TrainResult:
        """Train to :attr:`total_steps`; returns the summary."""
        start = time.perf_counter()
        history: list[dict[str, Any]] = []
        finished_already = self.progress.global_step >= self.total_steps
        if finished_already and self.info.is_main:
            logger.info(
                "the run in %s is finished (step %d of %d): nothing to train; to train longer, "
                "resume with --set epochs=N or --max-steps N",
                self.out_dir,
                self.progress.global_step,
                self.total_steps,
            )
        while self.progress.global_step < self.total_steps:
            epoch = self.progress.epoch
            self._train_epoch(epoch)
            # Validate on the schedule, and always the final weights (wherever the run
            # ends) so that best.safetensors considers them.
            final = self.progress.global_step >= self.total_steps
            record = self._maybe_validate(epoch, force=final)
            if record:
                history.append(record)
            if self.progress.step_in_epoch >= self.steps_per_epoch:
                self.progress.epoch += 1
                self.progress.step_in_epoch = 0
            self._save_last()
        self.log.plot()
        self.log.close()
        skipped_clips = merge_skipped(dist.all_gather_object(self.bad_clips.records()))
        dist.barrier()
        result = TrainResult(
            out_dir=str(self.out_dir),
            epochs=self.progress.epoch + (1 if self.progress.step_in_epoch else 0),
            steps=self.progress.global_step,
            best_miou=self.progress.best_miou,
            best_fscore=self.progress.best_fscore,
            best_epoch=self.progress.best_epoch + 1,
            last_checkpoint=str(self.out_dir / LAST),
            best_checkpoint=str(self.out_dir / BEST) if (self.out_dir / BEST).exists() else None,
            seconds=time.perf_counter() - start,
            history=history,
            total_steps=self.total_steps,
            already_finished=finished_already,
            nonfinite_skipped_steps=self.progress.nonfinite_skipped,
            overflow_skipped_steps=self.progress.overflow_skipped,
            skipped_clips=skipped_clips,
        )
        if self.info.is_main and not finished_already:
            _write_json(self.out_dir / "train_summary.json", dataclasses.asdict(result))
        return result

    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start=self.progress.step_in_epoch * self.local_batch)
        workers = self.config.train.num_workers
        return DataLoader(
            # Clips that fail to load come back as records: their own one-line error
            # (not torch's worker traceback), or skipped with skip_bad_clips.
            GuardedDataset(self.train_set, video_id_of(self.train_set)),
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=guarded_collate(collate),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Its own generator: creating the loader must not draw from the global RNG,
            # or a resumed run would see different dropout masks.
            generator=torch.Generator().manual_seed(self.config.train.seed + epoch),
        )

    def _train_epoch(self, epoch: int) -> None:
        """Run the remaining steps of ``epoch`` (stopping at :attr:`total_steps`)."""
        net = self._set_phase(epoch)
        self._train_mode()
        loader = self._loader(epoch)
        steps_left = self.total_steps - self.progress.global_step
        in_epoch = min(self.steps_per_epoch, self.progress.step_in_epoch + steps_left)
        bar = progress_bar(
            in_epoch,
            f"epoch {epoch + 1}/{math.ceil(self.total_steps / self.steps_per_epoch)}",
            "step",
            initial=self.progress.step_in_epoch,
            enabled=self.options.progress and self.info.is_main,
        )
        window = _empty_window()
        window_start = time.perf_counter()
        first_step = self.progress.global_step + 1
        largest_lr = 0.0
        with bar:
            for guarded in loader:
                batch = self.bad_clips.accept(guarded)
                if self.options.skip_bad_clips and self.info.world_size > 1:
                    # DDP needs every process in the backward: if one has no clip left,
                    # all skip the step.
                    empty = torch.tensor([float(batch is None)], device=self.device)
                    if dist.all_reduce_tensor(empty).item() > 0:
                        batch = None
                self._step_lr = self.optimizer.param_groups[0]["lr"]  # this step's
                largest_lr = max(largest_lr, self._step_lr)
                parts = self._step(net, batch, epoch) if batch is not None else None
                if batch is None:  # every clip of the batch skipped: no update
                    self._step_without_update()
                self.progress.step_in_epoch += 1
                self.progress.global_step += 1
                if parts is not None:
                    for key in ("loss", "iou_loss", "mix_loss"):
                        window[key] += parts[key]
                    window["n"] += 1
                    bar.update(1, loss=f"{parts['loss']:.4f}")
                else:
                    window["skipped"] += 1
                    bar.update(1)
                step = self.progress.global_step
                last = step >= self.total_steps
                if (
                    step % self.options.log_every_steps == 0
                    or self.progress.step_in_epoch == self.steps_per_epoch
                    or last
                ):
                    self._log_train(epoch, window, time.perf_counter() - window_start)
                    window = _empty_window()
                    window_start = time.perf_counter()
                if self.options.on_step_end is not None:
                    self.options.on_step_end(self)
                if self.options.save_every_steps and step % self.options.save_every_steps == 0:
                    self._save_last()
                if last:
                    break
        if largest_lr == 0.0 and self.progress.global_step >= first_step and self.info.is_main:
            logger.warning(
                "the learning rate was 0 for every step of epoch %d (steps %d-%d): the weights "
                "did not change; the schedule ends at step %d",
                epoch + 1,
                first_step,
                self.progress.global_step,
                self.total_steps,
            )

    def _step(self, net: nn.Module, batch: Any, epoch: int) -> dict[str, float] | None:
        """One optimiser step; ``None`` when it was skipped (non-finite, see module doc)."""
        batch = batch.to(self.device, non_blocking=True)
        frames, audio, temporal_mask = model_inputs(batch, self.task)
        target = batch.masks.flatten(0, 1)
        flags = self.task.loss_frame_flags(batch)
        if self.config.train.audio == "zero":
            audio = self.audio_front_end.silence_like(audio)
        if self.config.train.train_frames == "labelled" and flags is not None:
            keep = flags > 0
            frames, audio, target, flags = frames[keep], audio[keep], target[keep], flags[keep]
            if temporal_mask is not None:
                temporal_mask = temporal_mask[keep]
        with self.config.train.precision.autocast(self.device):
            out = net(frames, audio, temporal_mask)
        loss, parts = self.criterion(out.logits.float(), out.mask_feature.float(), target, flags)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # true gradients (a no-op without a scaler)
        with_grad = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = (
            torch.nn.utils.get_total_norm([p.grad for p in with_grad])
            if with_grad
            else torch.zeros((), device=self.device)
        )
        values = torch.stack(
            [loss.detach(), parts["iou_loss"], parts["mix_loss"], grad_norm.detach()]
        ).float()
        # Gradients are all-reduced (the same norm everywhere); losses are per process.
        loss_bad = (~torch.isfinite(values[:1])).float()
        if self.info.world_size > 1:
            loss_bad = dist.all_reduce_tensor(loss_bad)
        loss_value, iou_value, mix_value, norm_value = values.tolist()
        if loss_bad.item() > 0 or not math.isfinite(norm_value):
            self._nonfinite_step(epoch, loss_value, norm_value, bad_loss=loss_bad.item() > 0)
            return None
        self._consecutive_nonfinite = 0
        if self.config.train.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(with_grad, self.config.train.grad_clip, grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss_value, "iou_loss": iou_value, "mix_loss": mix_value}

    def _nonfinite_step(self, epoch: int, loss: float, norm: float, *, bad_loss: bool) -> None:
        """A step with a NaN/inf loss or gradient norm: stop, or skip it and count."""
        step = self.progress.global_step + 1
        which = f"the loss is {loss}" if bad_loss else f"the gradient norm is {norm}"
        overflow = self.scaler.is_enabled() and not bad_loss
        if not overflow and self.config.train.nonfinite == "stop":
            self._stop(step, epoch, which, nonfinite_hint=True)
        self._consecutive_nonfinite += 1
        if overflow:
            self.progress.overflow_skipped += 1
        else:
            self.progress.nonfinite_skipped += 1
            if self.info.is_main:
                logger.warning("step %d (epoch %d) skipped: %s (train.nonfinite=skip)",
                               step, epoch + 1, which)  # fmt: skip
        if self._consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
            self._stop(
                step, epoch, f"{which} ({self._consecutive_nonfinite} non-finite steps in a "
                "row: the weights are not recovering)", nonfinite_hint=False,
            )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()  # lowers the float16 loss scale after an overflow
        self._step_without_update()

    def _step_without_update(self) -> None:
        """A step that changes no weight (skipped) still advances the schedule."""
        with warnings.catch_warnings():
            # "lr_scheduler.step() before optimizer.step()": deliberate here.
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _stop(self, step: int, epoch: int, why: str, *, nonfinite_hint: bool) -> None:
        """End the run at ``step`` with a :class:`NonFiniteError`; nothing is saved, the
        last good checkpoint stays; the log and the summary say why."""
        if self._last_saved_step is not None:
            kept = f"{self.out_dir / LAST} (step {self._last_saved_step}) is kept"
        else:
            kept = "no checkpoint of this run had been written yet"
        message = f"training stopped at step {step} (epoch {epoch + 1}): {why}; {kept}"
        skip = ", or train.nonfinite='skip' to skip such steps" if nonfinite_hint else ""
        cli_skip = ", or --set nonfinite=skip to skip such steps" if nonfinite_hint else ""
        if self.info.is_main:
            self.log.log({"kind": "stopped", "epoch": epoch + 1, "step": step, "reason": why})
            self.log.close()
            _write_json(
                self.out_dir / "train_summary.json",
                {"status": "stopped", "error": message, "steps": step - 1,
                 "total_steps": self.total_steps, "last_checkpoint_step": self._last_saved_step,
                 "nonfinite_skipped_steps": self.progress.nonfinite_skipped,
                 "overflow_skipped_steps": self.progress.overflow_skipped},
            )  # fmt: skip
        raise NonFiniteError(
            message,
            hint=f"lower train.lr, check the data{skip}",
            cli_hint=f"lower the learning rate (--set lr=...), check the data{cli_skip}",
        )

    def _require_finite_weights(self, epoch: int, before: str) -> None:
        """Stop (see :meth:`_stop`) if any weight is NaN/inf: nothing is saved or scored
        from such weights."""
        tensors = [(k, t) for k, t in self.model.state_dict().items() if t.is_floating_point()]
        finite = torch.stack([torch.isfinite(t).all() for _, t in tensors])
        if bool(finite.all()):
            return
        bad = [k for (k, _), ok in zip(tensors, finite.tolist(), strict=True) if not ok]
        self._stop(
            self.progress.global_step, epoch,
            f"{len(bad)} of {len(tensors)} weight tensors are NaN or infinite (first: {bad[0]}) "
            f"{before}", nonfinite_hint=False,
        )  # fmt: skip

    def _log_train(self, epoch: int, window: dict[str, float], seconds: float) -> None:
        n = max(1, int(window["n"]))
        values = torch.tensor([window[k] / n for k in ("loss", "iou_loss", "mix_loss")])
        if self.info.world_size > 1:
            values = dist.all_reduce_tensor(values.to(self.device)).cpu() / self.info.world_size
        updated = bool(window["n"])  # steps with an update in this window (else: no loss)
        record: dict[str, Any] = {
            "kind": "train",
            "epoch": epoch + 1,
            "step": self.progress.global_step,
            "loss": float(values[0]) if updated else None,
            "iou_loss": float(values[1]) if updated else None,
            "mix_loss": float(values[2]) if updated else None,
            "lr": self._step_lr,  # the learning rate of the last step logged
            "seconds": seconds,
            "samples_per_second": n * self.config.train.batch_size / max(seconds, 1e-9),
        }
        if window["skipped"]:
            record["skipped_steps"] = int(window["skipped"])
        self.log.log(record)
        self._check_weights_moved(record["lr"])

    def _check_weights_moved(self, lr: float) -> None:
        """Warn when the trained weights are bit-identical to the previous log line's
        although the optimiser stepped (a zero learning rate, no gradients reaching them)."""
        if not self.info.is_main:
            return
        trained = [p for p in self.model.parameters() if p.requires_grad]
        if not trained:
            return
        with torch.no_grad():
            norms = torch.stack([p.detach().float().norm() for p in trained])
        fingerprint = norms.cpu().numpy().tobytes()
        previous, self._weights_fingerprint = (
            getattr(self, "_weights_fingerprint", None),
            (fingerprint, self.progress.global_step),
        )
        if previous is not None and previous[0] == fingerprint:
            logger.warning(
                "the trained weights did not change from step %d to step %d although the "
                "optimiser stepped (learning rate %g): check the schedule, the learning rate "
                "and which parts are frozen",
                previous[1],
                self.progress.global_step,
                lr,
            )

    # ------------------------------------------------------------------ validation
    def _maybe_validate(self, epoch: int, *, force: bool = False) -> dict[str, Any] | None:
        cfg = self.config.train
        if self.val_set is None:
            return None
        scheduled = epoch >= cfg.eval_start_epoch and epoch % max(1, cfg.eval_every) == 0
        if not (scheduled or force):
            return None
        self._require_finite_weights(epoch, "before validation")
        result = self.validate()
        record = {
            "kind": "val",
            "epoch": epoch + 1,
            "step": self.progress.global_step,
            "miou": result.miou,
            "fscore": result.fscore,
            "seconds": result.seconds,
        }
        self.log.log(record)
        if self.info.is_main:
            logger.info("epoch %d: val mIoU %.4f F %.4f", epoch + 1, result.miou, result.fscore)
        if result.miou > self.progress.best_miou:
            self.progress.best_miou = result.miou
            self.progress.best_fscore = result.fscore
            self.progress.best_epoch = epoch
            if self.info.is_main:
                save_checkpoint(
                    self.model,
                    self.out_dir / BEST,
                    config=self.config,
                    metadata={
                        "epoch": epoch + 1,
                        "step": self.progress.global_step,
                        "val_miou": result.miou,
                        "val_fscore": result.fscore,
                        "val_split": self.options.val_split,
                    },
                )
            dist.barrier()
        return record

    def validate(self) -> EvalResult:
        """Score the current weights on the validation split (all processes take part)."""
        assert self.val_set is not None
        cfg = self.config.train
        result = evaluate(
            self.model,
            self.val_set,
            task=self.task.name,
            batch_size=max(1, cfg.eval_batch_size // self.info.world_size),
            videos_per_group=cfg.eval_batch_size,
            audio_mode=cfg.audio,
            precision=cfg.precision,
            progress=self.options.progress,
            split=self.options.val_split,
            skip_bad_clips=self.options.skip_bad_clips,
        )
        if result.skipped_clips:
            for record in result.skipped_clips:
                self.bad_clips.skipped.setdefault(
                    record["video_id"],
                    SkippedClip(record["video_id"], record["reason"], record["times"]),
                )
        self._train_mode()
        return result

    # ------------------------------------------------------------------ checkpoints
    def _save_last(self) -> None:
        """Write ``last.safetensors`` (main process), with every process's RNG state."""
        self._require_finite_weights(self.progress.epoch, f"at the save of {LAST}")
        rng_tensors, rng_record = capture_rng_state()
        gathered = dist.all_gather_object(
            ({k: v.numpy() for k, v in rng_tensors.items()}, rng_record)
        )
        if not self.info.is_main:
            dist.barrier()
            return
        extra, optim_record = optimizer_state_to_tensors(self.optimizer.state_dict())
        rng_records = []
        for rank, (tensors, record) in enumerate(gathered):
            for key, value in tensors.items():
                extra[f"rank{rank}.{key}"] = torch.from_numpy(value)
            rng_records.append(record)
        metadata = {
            "kind": "training_state",
            "progress": dataclasses.asdict(self.progress),
            "optimizer": optim_record,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_records,
            "world_size": self.info.world_size,
            "steps_per_epoch": self.steps_per_epoch,
            # What the run trains on, to notice a resume on other data.
            "data_root": str(Path(self.options.data_root).resolve()),
            "train_clips": len(self.train_set),  # type: ignore[arg-type]
            "schedule": {
                "total_steps": self.total_steps,
                "max_steps": self.max_steps,
                "epochs": self.config.train.epochs,
            },
        }
        save_checkpoint(
            self.model, self.out_dir / LAST, config=self.config, metadata=metadata,
            extra_tensors=extra,
        )  # fmt: skip
        self._last_saved_step = self.progress.global_step
        dist.barrier()

    def _restore(self, path: Path, contents: Any) -> None:
        meta = contents.metadata
        self.model.load_state_dict(
            {k: v.to(self.device) for k, v in contents.state_dict.items()}, strict=True
        )
        self.optimizer.load_state_dict(
            optimizer_state_from_tensors(contents.extra_tensors, meta["optimizer"])
        )
        self.scheduler.load_state_dict(meta["scheduler"])
        # LambdaLR restores its schedule object's fields (the saved run's end); the end
        # is this run's (the same unless epochs or max_steps changed).
        schedule = LearningRateSchedule(
            self.config.train.scheduler, self.config.train.warmup_steps, self.total_steps
        )
        self.scheduler.lr_lambdas = [schedule] * len(self.optimizer.param_groups)
        lr_changed = any(base != self.config.train.lr for base in self.scheduler.base_lrs)
        if lr_changed:
            # The scheduler restored the saved run's base rate: --set lr=... must count.
            self.scheduler.base_lrs = [self.config.train.lr] * len(self.optimizer.param_groups)
            for group in self.optimizer.param_groups:
                group["initial_lr"] = self.config.train.lr
        if self._schedule_note or lr_changed:
            for group, base in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * schedule(self.scheduler.last_epoch)
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.progress = Progress(**meta["progress"])
        saved_world = int(meta.get("world_size", 1))
        rank = self.info.rank
        if saved_world != self.info.world_size:
            logger.warning(
                "resuming a %d-process run with %d processes: training continues, but not "
                "bit-identically to the original run",
                saved_world,
                self.info.world_size,
            )
            rank = rank % saved_world
        prefix = f"rank{rank}."
        rng = {
            k[len(prefix) :]: v for k, v in contents.extra_tensors.items() if k.startswith(prefix)
        }
        restore_rng_state(rng, meta["rng"][rank])
        self.log.truncate_after(self.progress.global_step)
        if self.info.is_main:
            logger.info(
                "resumed from %s at epoch %d, step %d of %d",
                path,
                self.progress.epoch + 1,
                self.progress.global_step,
                self.total_steps,
            )
            if self._schedule_note:
                logger.warning("%s", self._schedule_note)


def optimised_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters the optimiser updates at some point of the schedule.

    Everything but the unused modules and a frozen audio encoder: the visual backbone is
    included even while frozen (no gradient, so AdamW skips it until it is unfrozen).
    """
    frozen_audio = bool(getattr(model, "freeze_audio", False))
    return [
        p
        for name, p in model.named_parameters()
        if not _is_unused(name) and not (frozen_audio and name.startswith("vggish."))
    ]


def _is_unused(name: str) -> bool:
    """Whether parameter ``name`` belongs to a module the forward never runs
    (:data:`~avsegformer.checkpoint.UNUSED_PREFIXES`)."""
    return name.startswith(UNUSED_PREFIXES)


def _freeze_unused_modules(model: nn.Module) -> None:
    """No gradient for the modules the forward never uses: they stay in the state dict
    (strict loading of the authors' files) but must not be optimised, and DDP would wait
    for their gradients."""
    for name, param in model.named_parameters():
        if _is_unused(name):
            param.requires_grad_(False)


class LearningRateSchedule:
    """Multiplier of the base learning rate at a step (picklable, no hidden state)."""

    def __init__(self, kind: str, warmup_steps: int, total_steps: int) -> None:
        if kind not in ("constant", "cosine"):
            raise ConfigError(f"unknown scheduler {kind!r}; expected constant or cosine")
        self.kind, self.warmup_steps, self.total_steps = kind, warmup_steps, max(1, total_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def _write_json(path: Path, value: Any) -> None:
    # JSON has no NaN: non-finite numbers become null (listed under "nonfinite").
    atomic_write_text(path, json.dumps(json_safe(value), indent=2, default=str, allow_nan=False))


def _empty_window() -> dict[str, float]:
    """Sums of the steps logged together (``n`` updated, ``skipped`` not)."""
    return {"loss": 0.0, "iou_loss": 0.0, "mix_loss": 0.0, "n": 0, "skipped": 0}
