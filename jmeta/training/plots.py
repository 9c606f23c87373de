"""A PNG learning curve from a run's `metrics.jsonl` (needs matplotlib, the `plot` extra)."""

from __future__ import annotations

import os

from jmeta.training.loop import read_metrics


def plot_learning_curve(out_dir: str | os.PathLike, filename: str = 'learning_curve.png') -> str | None:
  """Plots training loss and any `valid_*` metric against step; returns the PNG's path, or None without
  matplotlib."""
  try:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  records = read_metrics(out_dir)
  if not records:
    return None
  valid_keys = sorted({k for r in records for k in r if k.startswith('valid_') and k != 'valid_ci95'})
  fig, axes = plt.subplots(1, 1 + len(valid_keys), figsize=(5 * (1 + len(valid_keys)), 3.5), squeeze=False)
  axes = axes[0]
  loss = [r['loss'] for r in records]
  axes[0].plot([r['step'] for r in records], loss)
  # A negative log-likelihood (neural processes) goes below 0, where a log scale has nothing to show.
  axes[0].set(xlabel='meta-step', ylabel='meta-training loss', yscale='log' if min(loss) > 0 else 'linear',
              title='training')
  for ax, key in zip(axes[1:], valid_keys):
    rows = [r for r in records if key in r]
    steps = [r['step'] for r in rows]
    means = [r[key] for r in rows]
    half = [r.get('valid_ci95', 0.0) for r in rows]
    ax.errorbar(steps, means, yerr=half, marker='o', capsize=3)
    ax.set(xlabel='meta-step', ylabel=key, title='validation (95% CI)')
  fig.tight_layout()
  path = os.path.join(out_dir, filename)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
