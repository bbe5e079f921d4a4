"""training_metrics.csv: one row per epoch, rewritten atomically after each,
columns epoch, train_total_loss, val_total_loss, then each sub-loss."""
import csv
import io
import os

from ..checkpoint import atomic_open


class TrainingMetrics:
    def __init__(self, directory: str, losses: tuple[str, ...], resume_epoch: int | None = None):
        self.path = os.path.join(directory, "training_metrics.csv")
        self.columns = (["epoch", "train_total_loss", "val_total_loss"]
                        + [f"train_{k}_loss" for k in losses] + [f"val_{k}_loss" for k in losses])
        self.losses = losses
        self.rows: list[dict] = []
        if resume_epoch is not None and os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]

    def add(self, epoch: int, train: dict, val: dict) -> None:
        row = {"epoch": epoch, "train_total_loss": sum(train.values()),
               "val_total_loss": sum(val[k] for k in self.losses) if val else ""}
        for k in self.losses:
            row[f"train_{k}_loss"] = train[k]
            row[f"val_{k}_loss"] = val.get(k, "")
        self.rows.append(row)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        with atomic_open(self.path) as f:
            f.write(buf.getvalue().encode("utf-8"))
