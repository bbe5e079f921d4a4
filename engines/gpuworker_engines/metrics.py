"""Training metrics: metrics.csv (one row per epoch) and a loss-curve loss.png."""
import csv
import os


class MetricsLog:
    """Appends rows to <dir>/metrics.csv; columns are fixed by the first row.

    On resume the existing file is kept and rows past the resumed epoch are
    dropped, so the curve has no duplicate epochs.
    """

    def __init__(self, directory: str, resume_epoch: int | None = None):
        self.path = os.path.join(directory, "metrics.csv")
        self.rows: list[dict] = []
        if resume_epoch is not None and os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]
        self._write()

    def add(self, **row) -> None:
        self.rows.append({k: ("" if v is None else v) for k, v in row.items()})
        self._write()

    def _write(self) -> None:
        if not self.rows:
            return
        fields = list(self.rows[0].keys())
        for r in self.rows[1:]:
            fields += [k for k in r if k not in fields]
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)

    def plot(self, columns: list[str], title: str) -> str:
        """Draws the given loss columns against epoch into loss.png."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = os.path.join(os.path.dirname(self.path), "loss.png")
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        epochs = [int(r["epoch"]) for r in self.rows]
        for col in columns:
            ys = [float(r[col]) if r.get(col) not in (None, "") else float("nan") for r in self.rows]
            ax.plot(epochs, ys, label=col)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out)
        plt.close(fig)
        return out
