"""The whole config: every section, its defaults from the section classes, validated as one tree.

`defaults()` is the `ml_collections.ConfigDict` a config file starts from and overrides (every key,
so every key is settable from the command line as `--config.a.b=value`); `typed(config)` turns a
ConfigDict (or a typed config) into the frozen, validated `Config` a run uses. Nothing here writes a
default: each key's default is the field of the section declared beside the code it configures.

| section    | class            | declared in                         |
|------------|------------------|-------------------------------------|
| task       | TaskConfig       | fedlora/tasks/base.py               |
| model      | ModelConfig      | fedlora/models/config.py            |
| data       | DataConfig       | fedlora/data/config.py (+ partitions)|
| lora       | LoraConfig       | fedlora/lora/config.py (+ inits)    |
| fed        | FedConfig        | fedlora/fed/config.py               |
| client     | ClientConfig     | fedlora/fed/config.py (+ drift)     |
| server     | ServerConfig     | fedlora/server/base.py (+ servers)  |
| optim      | OptimConfig      | fedlora/optim/__init__.py (+ optims)|
| method     | MethodConfig     | fedlora/methods/registry.py (+ methods) |
| compress   | CompressConfig   | fedlora/compress/__init__.py (+ compressors) |
| wireless   | WirelessConfig   | fedlora/wireless/config.py (channel: wireless/channel.py) |
| tsfa       | TSFAConfig       | fedlora/tsfa/config.py (online: tsfa/online.py) |
| eval       | EvalConfig       | fedlora/tasks/base.py               |
| checkpoint | CheckpointConfig | fedlora/utils/checkpoint.py         |
| mesh       | MeshConfig       | fedlora/fed/sharding.py             |
"""
from __future__ import annotations

import dataclasses
import re

from fedlora.compress import CompressConfig, get_compressor
from fedlora.data.config import DataConfig
from fedlora.fed.config import ClientConfig, FedConfig
from fedlora.fed.sharding import MeshConfig
from fedlora.lora.config import LoraConfig
from fedlora.methods.registry import METHODS, MethodConfig
from fedlora.models.config import ModelConfig
from fedlora.optim import OptimConfig
from fedlora.run.workdir import RESUME_MODES
from fedlora.section import ConfigError, Section, component_options, is_int, section_field
from fedlora.server import ServerConfig
from fedlora.tasks.base import TASKS, EvalConfig, TaskConfig
from fedlora.tracking import tracker_names
from fedlora.tsfa.config import TSFAConfig
from fedlora.utils.checkpoint import CheckpointConfig
from fedlora.wireless.channel import csi_quantile_factor
from fedlora.wireless.config import WirelessConfig



@dataclasses.dataclass(frozen=True)
class Config(Section):
  """The top level: the run's own keys and one field per section.

  name:     experiment name; names the default workdir (letters, digits and _ . + -)
  seed:     master PRNG seed: model head, adapters, client sampling, batches, channel
  workdir:  output folder (metrics.jsonl, summary.json, plots, checkpoints); '' = runs/<name>-<method>-s<seed>
  resume:   rerun into a workdir: 'auto' resume if same config | 'never' fresh only | 'must' resume only
  debug:    show Python tracebacks instead of one-paragraph error messages
  progress: show a progress bar
  tracking: where each round's record goes: comma-separated trackers (fedlora/tracking/), 'jsonl'
            (metrics.jsonl, always) plus 'tensorboard' (<workdir>/tensorboard/) and/or 'wandb'
            (needs `pip install wandb`), e.g. 'jsonl,tensorboard'
  """
  name: str = "bbc_minilm"
  seed: int = 0
  workdir: str = ""
  resume: str = "auto"
  debug: bool = False
  progress: bool = True
  tracking: str = "jsonl"
  task: TaskConfig = section_field(TaskConfig)
  model: ModelConfig = section_field(ModelConfig)
  data: DataConfig = section_field(DataConfig)
  lora: LoraConfig = section_field(LoraConfig)
  fed: FedConfig = section_field(FedConfig)
  server: ServerConfig = section_field(ServerConfig)
  client: ClientConfig = section_field(ClientConfig)
  optim: OptimConfig = section_field(OptimConfig)
  method: MethodConfig = section_field(MethodConfig)
  compress: CompressConfig = section_field(CompressConfig)
  wireless: WirelessConfig = section_field(WirelessConfig)
  tsfa: TSFAConfig = section_field(TSFAConfig)
  eval: EvalConfig = section_field(EvalConfig)
  checkpoint: CheckpointConfig = section_field(CheckpointConfig)
  mesh: MeshConfig = section_field(MeshConfig)

  def check(self) -> None:
    """The run's own keys and the rules that span sections (each section checked itself)."""
    self.need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
    self.need(isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9_.+-]+", self.name) is not None,
              "name", "letters, digits and _ . + - (it names the default workdir)")
    self.need(isinstance(self.workdir, str), "workdir", "a path ('' = runs/<name>-<method>-s<seed>)")
    self.need(self.resume in RESUME_MODES, "resume", f"one of {RESUME_MODES}")
    self.need(isinstance(self.debug, bool), "debug", "True or False")
    self.need(isinstance(self.progress, bool), "progress", "True or False")
    tracker_names(self.tracking)
    if self.fed.clients_per_round > self.data.num_clients:
      raise ConfigError(f"config.fed.clients_per_round={self.fed.clients_per_round!r} is not allowed: "
                        f"an integer >= 1 and <= {self.data.num_clients} (data.num_clients)")
    ranks, n = self.lora.client_ranks, self.data.num_clients
    if ranks and self.lora.client_ranks_by == "client" and len(ranks) != n:
      raise ConfigError(f"config.lora.client_ranks={ranks!r} is not allowed: one rank per client "
                        f"(lora.client_ranks_by='client'), i.e. {n} ranks (data.num_clients); got "
                        f"{len(ranks)}")
    if ranks and self.lora.client_ranks_by == "speed" and len(ranks) > n:
      raise ConfigError(f"config.lora.client_ranks={ranks!r} is not allowed: with lora.client_ranks_by="
                        f"'speed' at most data.num_clients={n} ranks (one per speed quantile)")
    spec = METHODS.get(self.method.name).obj
    if self.wireless.enabled and get_compressor(spec.compressor, self.compress).payload is None:
      raise ConfigError(f"config.method.name={self.method.name!r}: its compressor "
                        f"{spec.compressor!r} declares no payload model (Compressor.payload); the "
                        "wireless uplink (wireless.enabled=True) plans with it")
    if self.tsfa.offline.enabled and not self.wireless.enabled:
      raise ConfigError("config.tsfa.offline.enabled=True needs config.wireless.enabled=True (the "
                        "offline stage trades the bound against the uplink latency budget)")
    if self.wireless.enabled and self.tsfa.online.robust:
      try:
        csi_quantile_factor(self.wireless.channel.csi_error_std, self.tsfa.online.miss_prob)
      except ValueError as e:
        raise ConfigError(f"config.tsfa.online.miss_prob={self.tsfa.online.miss_prob!r} is not allowed "
                          f"with config.wireless.channel.csi_error_std="
                          f"{self.wireless.channel.csi_error_std!r} (tsfa.online.robust=True): {e}") from None
    TASKS.get(self.task.name).obj.validate(self)

  def no_effect(self) -> list[str]:
    """Settings this config holds at a non-default value that nothing it runs reads: the keys of
    components it does not select, and the uplink's keys without the uplink. Each is one line
    naming the key, its value and why (the trainer warns them; they are not errors)."""
    base, out = Config(), []
    selected = {"server": {self.server.name}, "optim": {self.optim.name}, "lora": {self.lora.init},
                "method": {self.method.name}, "task": {self.task.name},
                "compress": {METHODS.get(self.method.name).obj.compressor},
                "data": {self.data.partition, self.data.source}}
    for section, names in selected.items():
      have, default = getattr(self, section), getattr(base, section)
      used = {k for n in names if n in component_options(type(have))
              for k in component_options(type(have))[n].defaults()}
      for name, opts in component_options(type(have)).items():
        for k in opts.defaults():
          if k not in used and getattr(have, k) != getattr(default, k):
            out.append(f"config.{section}.{k}={getattr(have, k)!r} has no effect: it is a key of "
                       f"{section} component {name!r}, and this config selects {sorted(names)}")
            used.add(k)
    if not self.wireless.enabled:
      for section, keys in (("method", ("allocation",)), ("wireless", ("deadline_factor", "channel")),
                            ("tsfa", ("online",))):
        for k in keys:
          if getattr(getattr(self, section), k) != getattr(getattr(base, section), k):
            out.append(f"config.{section}.{k} is set but has no effect without the uplink "
                       "(wireless.enabled=False)")
    if self.client.logit_adjust != "fedlc" and self.client.fedlc_tau != base.client.fedlc_tau:
      out.append(f"config.client.fedlc_tau={self.client.fedlc_tau!r} has no effect: client.logit_adjust="
                 f"{self.client.logit_adjust!r}")
    if self.client.logit_adjust != "fedrs" and self.client.fedrs_alpha != base.client.fedrs_alpha:
      out.append(f"config.client.fedrs_alpha={self.client.fedrs_alpha!r} has no effect: client.logit_adjust="
                 f"{self.client.logit_adjust!r}")
    return out

  def to_configdict(self):
    """The ConfigDict of this config (what `--print_config` prints)."""
    import ml_collections
    return ml_collections.ConfigDict(self.to_dict())


def defaults():
  """The ConfigDict of every key at its default (what a config file starts from)."""
  import ml_collections
  return ml_collections.ConfigDict(Config.defaults())


def typed(config) -> Config:
  """The validated `Config` of a ConfigDict (or a Config, returned as it is). ConfigError names the
  first bad key, its value and what is allowed."""
  if isinstance(config, Config):
    return config
  values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return Config.from_dict(values)


__all__ = ["Config", "ConfigError", "defaults", "typed"]
