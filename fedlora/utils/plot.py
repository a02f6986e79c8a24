"""End-of-run plots (PNG) from metrics.jsonl: accuracy and cumulative uplink vs round."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(records: list[dict], out_png: str, title: str = "") -> None:
  """Two panels: test accuracy (evaluated rounds) and cumulative uplink MB, both vs round."""
  ev = [r for r in records if r.get("test_accuracy") is not None]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax1.plot([r["round"] for r in ev], [100 * r["test_accuracy"] for r in ev], "o-")
  ax1.set_xlabel("round")
  ax1.set_ylabel("test accuracy (%)")
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
