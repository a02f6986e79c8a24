"""End-of-run plots (PNG) from metrics.jsonl: accuracy and cumulative uplink vs round."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(records: list[dict], out_png: str, title: str = "", metric: str = "test_accuracy") -> None:
  """Two panels: the test metric (evaluated rounds; accuracy in %) and cumulative uplink MB vs round."""
  ev = [r for r in records if r.get(metric) is not None]
  scale = 100 if metric == "test_accuracy" else 1
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax1.plot([r["round"] for r in ev], [scale * r[metric] for r in ev], "o-")
  ax1.set_xlabel("round")
  ax1.set_ylabel("test accuracy (%)" if metric == "test_accuracy" else metric.replace("_", " "))
  ax1.grid(alpha=0.3)
  ax2.plot([r["round"] for r in records], [r["cum_uplink_bytes"] / 1e6 for r in records], "-")
  ax2.set_xlabel("round")
  ax2.set_ylabel("cumulative uplink (MB)")
  ax2.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)
