"""Run logs: JSON lines and CSV of losses and metrics, TensorBoard if installed, a PNG plot.

Only the main process writes. Records are flat dicts with at least ``kind`` ("train" or
"val"), ``epoch`` and ``step``. On resume, records newer than the resumed step are
dropped so that the log reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from ..fileio import atomic_path, atomic_write_text
from ..finite import json_safe

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "kind", "epoch", "step", "loss", "iou_loss", "mix_loss", "lr", "miou", "fscore",
    "seconds", "samples_per_second",
)  # fmt: skip


class RunLogger:
    """Appends records to ``log.jsonl`` and ``log.csv`` under ``out_dir``."""

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.jsonl_path = self.out_dir / "log.jsonl"
        self.csv_path = self.out_dir / "log.csv"
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs `tensorboard`

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                logger.debug("tensorboard not installed: TensorBoard logging off")

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step`` greater than ``step`` (used when resuming)."""
        if not self.enabled or not self.jsonl_path.exists():
            return
        kept = [r for r in self.records() if int(r.get("step", 0)) <= step]
        atomic_write_text(self.jsonl_path, "".join(_json_line(r) for r in kept))
        self._rewrite_csv(kept)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = json_safe(record)  # type: ignore[assignment]
        with open(self.jsonl_path, "a") as f:
            f.write(_json_line(record))
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(record)
        if self._tb is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if (
                    key not in ("kind", "epoch", "step")
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self._tb.add_scalar(f"{kind}/{key}", value, int(record.get("step", 0)))

    def records(self) -> list[dict[str, Any]]:
        if not self.jsonl_path.exists():
            return []
        records = []
        with open(self.jsonl_path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    # A line torn by a full disk or a kill: the rest of the log stays usable.
                    logger.warning(
                        "%s: line %d is not valid JSON; ignored", self.jsonl_path, number
                    )
        return records

    def _rewrite_csv(self, records: list[dict[str, Any]]) -> None:
        with atomic_path(self.csv_path) as temporary, open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(records)

    def plot(self) -> Path | None:
        """Write ``curves.png`` (training loss per step, validation metrics per epoch)."""
        if not self.enabled:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            logger.info("matplotlib not installed: no curves.png (pip install matplotlib)")
            return None
        records = self.records()
        train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
        val = [r for r in records if r.get("kind") == "val" and "miou" in r]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        ax = axes[0]
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="loss")
            for key in ("iou_loss", "mix_loss"):
                if key in train[0]:
                    ax.plot([r["step"] for r in train], [r[key] for r in train], label=key)
        ax.set_xlabel("step")
        ax.set_title("training loss")
        if train:
            ax.legend()
        ax = axes[1]
        if val:
            ax.plot([r["epoch"] for r in val], [r["miou"] for r in val], "o-", label="mIoU")
            if "fscore" in val[0]:
                ax.plot([r["epoch"] for r in val], [r["fscore"] for r in val], "s-", label="F")
        ax.set_xlabel("epoch")
        ax.set_title("validation")
        if val:
            ax.legend()
        fig.tight_layout()
        path = self.out_dir / "curves.png"
        with atomic_path(path, keep_suffix=True) as temporary:
            fig.savefig(temporary, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_line(record: dict[str, Any]) -> str:
    """One valid JSON line (NaN/inf as null, see :func:`avsegformer.finite.json_safe`)."""
    return json.dumps(json_safe(record), allow_nan=False) + "\n"
