"""Tracker 'wandb': a Weights & Biases run, when the `wandb` package is installed.

`wandb.init(project='fedlora', name=<workdir's folder name>, id=<stored id>, resume='allow',
dir=<workdir>, config=<the resolved config, flat>, mode='offline')`: offline by default (the files
go to `<workdir>/wandb/`; `wandb sync` uploads them); a `WANDB_MODE` (and `WANDB_PROJECT`) set in
the environment is left to W&B. Each round: `run.log(<the record's numeric scalars>, step=round)`.

`<workdir>/wandb_run.json` holds `{"id", "logged_through"}`: the run id, written before `init` so a
resumed run continues the same W&B run, and the last round logged. Rounds <= `logged_through` are
not logged again (a round re-run after an interruption has the same values: resume is bit-identical),
so each round is one step; a run that names 'wandb' first on a resume logs the earlier rounds from
metrics.jsonl before it continues. 'wandb' named without the package installed is a config error.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import uuid

from fedlora.tracking import TRACKERS, Spec, scalars
from fedlora.utils.files import write_json_atomic
from fedlora.utils.metrics import read_metrics

STATE = "wandb_run.json"


def _missing():
  try:
    importlib.import_module("wandb")
  except ImportError:
    return ("needs the wandb package, which is not installed (python: "
            f"{sys.executable}): pip install wandb, or leave 'wandb' out of config.tracking")
  return None


class WandbTracker:
  def __init__(self, workdir: str, start: int, config: dict):
    wandb = importlib.import_module("wandb")
    self.path = os.path.join(workdir, STATE)
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.state = json.load(f)
    else:
      self.state = {"id": uuid.uuid4().hex[:12], "logged_through": -1}
      write_json_atomic(self.path, self.state)
    kwargs = dict(name=os.path.basename(os.path.normpath(workdir)), id=self.state["id"],
                  resume="allow", dir=workdir, config=config)
    if "WANDB_MODE" not in os.environ:
      kwargs["mode"] = "offline"
    if "WANDB_PROJECT" not in os.environ:
      kwargs["project"] = "fedlora"
    self.run = wandb.init(**kwargs)
    if start > self.state["logged_through"]:  # 'wandb' added on resume: the earlier rounds first
      for rec in read_metrics(os.path.join(workdir, "metrics.jsonl"), report=False):
        if rec["round"] <= start:
          self.write(rec)

  def write(self, record: dict) -> None:
    step = int(record["round"])
    if step <= self.state["logged_through"]:
      return
    self.run.log(scalars(record), step=step)
    self.state["logged_through"] = step
    write_json_atomic(self.path, self.state)

  def close(self) -> None:
    self.run.finish()


TRACKERS.register("wandb")(Spec(open=WandbTracker, missing=_missing, entries=(STATE, "wandb")))
