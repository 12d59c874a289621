"""The loss-curve PNG written beside every run (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

from ..files.atomic import write_atomic


def plot_losses(metrics_path: Path, png_path: Path) -> Path | None:
    """Plot training loss (and validation loss, if logged) against the step; ``None`` if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, valid = [], []
    for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            train.append((record["step"], record["loss"]))
        if "valid_loss" in record:
            valid.append((record["step"], record["valid_loss"]))
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train), label="train loss", linewidth=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return png_path
