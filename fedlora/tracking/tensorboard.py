"""Tracker 'tensorboard': TensorBoard event files under `<workdir>/tensorboard/`.

Written with the `tensorboard` package alone (its `EventFileWriter` and protos; no TensorFlow, no
torch). Each round is one event at step = round holding every numeric scalar of the record as a
`simple_value` (tag = the metrics.jsonl key; bools as 0/1; lists such as per-client values are
left out); the resolved config is the run's hyperparameters (the hparams plugin's session start,
one entry per flat key, tuples as strings).

Resume: the event files are derived data, rebuilt from metrics.jsonl. A run that resumes after round
`start` > 0 removes the folder's event files and writes the rounds <= `start` from metrics.jsonl
again, then continues; so a round re-run after an interruption (written to metrics.jsonl, not yet
checkpointed) appears once, whatever reader opens the folder (no reliance on purge events).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import time

from fedlora.tracking import TRACKERS, Spec, scalars
from fedlora.utils.metrics import read_metrics

FOLDER = "tensorboard"


def _missing():
  if importlib.util.find_spec("tensorboard") is None:
    return "needs the tensorboard package, which is not installed: pip install tensorboard"
  return None


def hparams_summary(config: dict):
  """The hparams plugin's SessionStartInfo summary of a flat config `{key: value}`."""
  from tensorboard.compat.proto import summary_pb2
  from tensorboard.plugins.hparams import metadata, plugin_data_pb2
  info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
  for k, v in sorted(config.items()):
    if isinstance(v, bool):
      info.hparams[k].bool_value = v
    elif isinstance(v, (int, float)):
      info.hparams[k].number_value = v
    else:
      info.hparams[k].string_value = v if isinstance(v, str) else str(v)
  meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_start_info=info))
  return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
      tag=metadata.SESSION_START_INFO_TAG, metadata=meta, tensor=metadata.NULL_TENSOR)])


class TensorBoardTracker:
  def __init__(self, workdir: str, start: int, config: dict):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._event = event_pb2.Event
    self.dir = os.path.join(workdir, FOLDER)
    for f in glob.glob(os.path.join(self.dir, "events.out.tfevents.*")):
      os.remove(f)  # rebuilt below: the rounds <= start from metrics.jsonl, then this run's
    self.writer = EventFileWriter(self.dir)
    self.writer.add_event(self._event(wall_time=time.time(), summary=hparams_summary(config)))
    if start > 0:
      for rec in read_metrics(os.path.join(workdir, "metrics.jsonl"), report=False):
        if rec["round"] <= start:
          self._add(rec)
    self.writer.flush()

  def _add(self, record: dict) -> None:
    from tensorboard.compat.proto import summary_pb2
    values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars(record).items()]
    self.writer.add_event(self._event(wall_time=time.time(), step=int(record["round"]),
                                      summary=summary_pb2.Summary(value=values)))

  def write(self, record: dict) -> None:
    self._add(record)
    self.writer.flush()  # each round on disk when the round ends (a live TensorBoard sees it)

  def close(self) -> None:
    self.writer.close()


TRACKERS.register("tensorboard")(Spec(open=TensorBoardTracker, missing=_missing, entries=(FOLDER,)))
