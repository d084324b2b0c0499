"""losses.png: the GAN's curves (its losses, D's outputs and accuracy, FID) as one still picture."""

from __future__ import annotations

from pathlib import Path

from ganforge.io import atomic_writer, read_metrics


def plot_curves(metrics_path: Path, out: Path) -> Path | None:
    """losses.png: G and D loss, D(x) / D(G(z)) / D accuracy, and FID when evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path, kind="train") if "g_loss" in r]
    if not rows:
        return None
    evals = [r for r in read_metrics(metrics_path, kind="eval") if "fid" in r]
    steps = [r["step"] for r in rows]
    panels = 3 if evals else 2
    style = "o-" if len(rows) < 3 else "-"  # a line needs two points: mark a short run's few
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), dpi=100)
    axes[0].plot(steps, [r["d_loss"] for r in rows], style, label="D loss")
    axes[0].plot(steps, [r["g_loss"] for r in rows], style, label="G loss")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[0].set_title("losses")
    axes[1].plot(steps, [r["d_real"] for r in rows], style, label="D(x)")
    axes[1].plot(steps, [r["d_fake"] for r in rows], style, label="D(G(z))")
    axes[1].plot(steps, [r["d_acc"] for r in rows], style, label="D accuracy")
    axes[1].axhline(0.5, color="grey", lw=0.5, ls="--")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[1].set_title("discriminator")
    if evals:
        axes[2].plot([r["step"] for r in evals], [r["fid"] for r in evals], "o-", label="FID")
        axes[2].set_xlabel("step")
        axes[2].set_title("FID (lower is better)")
        axes[2].legend()
    fig.tight_layout()
    try:
        with atomic_writer(out, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return out
