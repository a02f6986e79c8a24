"""The config: every default written once (in its section), every key settable from the command line,
the whole tree validated before any data is read or model loaded, allowed names from the registries."""
import ast
import glob
import importlib.util
import json
import os
import re

import ml_collections
import pytest

from conftest import ROOT
from fedlora.config import Config, defaults, typed
from fedlora.section import ConfigError, Section

CONFIG_FILES = {"bbc_minilm.py": ("", "tiny"), "tiny.py": ("",), "wireless_compare.py": ("", "tiny"),
                "lm_instruct.py": ("", "tiny"), "lm_smollm2.py": ("multiemo", "instruct", "tiny"),
                "lm_gemma3.py": ("",),
                "skewed.py": ("dir01", "dir005", "quantity", "iid", "drug", "tiny")}


def flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def load_config_file(name, variant):
  spec = importlib.util.spec_from_file_location(f"_cfg_{name[:-3]}", os.path.join(ROOT, "configs", name))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant or None)


def test_every_config_file_and_variant_is_listed_here():
  files = sorted(os.path.basename(f) for f in glob.glob(os.path.join(ROOT, "configs", "*.py")))
  assert files == sorted(CONFIG_FILES)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in CONFIG_FILES.items() for v in vs])
def test_config_files_only_override(name, variant, monkeypatch):
  """A config file never sets a key to the value it already holds (its section's default, or what
  the config it derives from set): the default is written once, in the section."""
  noops = []
  original = ml_collections.ConfigDict.__setattr__

  def spy(self, key, value):
    if not key.startswith("_") and key in self and not isinstance(value, ml_collections.ConfigDict):
      old = self[key]
      if type(old) is type(value) and old == value:
        noops.append((key, value))
    return original(self, key, value)
  monkeypatch.setattr(ml_collections.ConfigDict, "__setattr__", spy)
  config = load_config_file(name, variant)
  assert noops == [], f"configs/{name}:{variant} sets keys to the value they already hold: {noops}"
  monkeypatch.undo()
  keys = set(flat(config.to_dict()))
  assert keys == set(flat(defaults().to_dict())), "a config file adds or drops keys"


def looks_like_config(node) -> bool:
  """`cfg`, `config.data`, `data_cfg`, `section`, `opts`, `c.fed`, ...: what a config read goes through."""
  text = ast.unparse(node) if node is not None else ""
  last = text.rsplit(".", 1)[-1]
  return bool(re.search(r"(cfg|config|section|opts?)", text)) or last in ("c", "o", "d")


def test_no_module_writes_a_default_outside_its_section():
  """No `*DEFAULTS` tables and no `get(key, default)` / `getattr(cfg, key, default)` reads of a config
  key with a fallback anywhere in fedlora/: a key's default is the field of its section."""
  keys = {k.rsplit(".", 1)[-1] for k in flat(defaults().to_dict())}
  found = []
  for path in glob.glob(os.path.join(ROOT, "fedlora", "**", "*.py"), recursive=True):
    tree = ast.parse(open(path).read())
    rel = os.path.relpath(path, ROOT)
    for node in ast.walk(tree):
      if isinstance(node, ast.Assign):
        for t in node.targets:
          if isinstance(t, ast.Name) and re.search(r"DEFAULTS$", t.id):
            found.append(f"{rel}:{node.lineno} {t.id}")
      if isinstance(node, ast.Call) and len(node.args) >= 2:
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
        key_arg = node.args[1] if name == "getattr" and len(node.args) == 3 else (
            node.args[0] if name == "get" else None)
        default = node.args[2] if name == "getattr" and len(node.args) == 3 else (
            node.args[1] if name == "get" else None)
        obj = node.args[0] if name == "getattr" else getattr(fn, "value", None)
        if (isinstance(key_arg, ast.Constant) and key_arg.value in keys and looks_like_config(obj)
            and not (isinstance(default, ast.Constant) and default.value is None)):
          found.append(f"{rel}:{node.lineno} {name}({key_arg.value!r}, <default>)")
  assert found == []


def test_every_section_documents_each_of_its_keys():
  """Each key is named in its section's (or its component's options') docstring."""
  from fedlora.section import component_options
  todo, seen, missing = [Config], set(), []
  while todo:
    cls = todo.pop()
    if cls in seen:
      continue
    seen.add(cls)
    todo.extend(component_options(cls).values())
    defaults_of = cls.defaults()
    for f in cls.own_fields():
      if isinstance(defaults_of[f.name], dict):  # a nested section
        todo.append(type(getattr(cls(), f.name)))
      elif not re.search(rf"\b{f.name}\b", cls.__doc__ or ""):
        missing.append(f"{cls.__module__}.{cls.__name__}.{f.name}")
  assert missing == [] and len(seen) >= 25


def test_every_key_is_settable_from_the_command_line():
  from fedlora.cli import parse_config
  d = flat(defaults().to_dict())
  args = []
  for k, v in d.items():
    if isinstance(v, tuple):
      v = repr(v)
    args.append(f"--config.{k}={v}")
  config, _ = parse_config(["fedlora", "--config", os.path.join(ROOT, "configs", "bbc_minilm.py"), *args])
  assert flat(config.to_dict()) == d


def test_component_keys_are_registered_config_keys():
  d = defaults()
  assert d.server.momentum == 0.9 and d.server.tau == 1e-3  # fedavgm's, the adaptive optimisers'
  assert d.compress.rcond == 1e-6 and d.compress.score_on == "delta"  # svd's, soft's
  assert d.client.scaffold is True and d.client.prox_mu == 0.0  # the drift corrections'
  assert d.method.ortho_weight == 1e-2 and d.lora.init_decay == 0.5 and d.optim.weight_decay == 0.0
  assert d.data.dirichlet_alpha == 0.5 and d.data.quantity_sigma == 1.0


@pytest.mark.parametrize("key,value,match", [
    ("server.name", "fedsgd", r"config\.server\.name='fedsgd' is not allowed: one of \('fedadagrad', "),
    ("compress.rcond", 2.0, r"config\.compress\.rcond=2\.0 is not allowed"),
    ("client.prox_mu", -1.0, r"config\.client\.prox_mu=-1\.0 is not allowed"),
    ("tsfa.online.max_iters", 0, r"config\.tsfa\.online\.max_iters=0 is not allowed"),
    ("wireless.channel.min_distance_m", 900.0, r"config\.wireless\.channel\.min_distance_m=900\.0"),
    ("data.partition", "roundrobin", r"config\.data\.partition='roundrobin' is not allowed: one of"),
    ("eval.max_new_tokens", -1, r"config\.eval\.max_new_tokens=-1 is not allowed"),
    ("fed.clients_per_round", 30, r"config\.fed\.clients_per_round=30 is not allowed"),
    ("lora.init", "xavier", r"config\.lora\.init='xavier' is not allowed: one of \("),
])
def test_whole_config_is_validated_before_any_data_or_model(key, value, match, monkeypatch, tmp_path):
  """Bad values of any section (component keys too, read or not) stop the CLI before the workdir,
  the data or the model is touched."""
  from fedlora import cli
  touched = []
  import fedlora.data.readers.bbcnews as bbc
  import fedlora.train as train
  monkeypatch.setattr(bbc, "load_bbcnews", lambda *a, **k: touched.append("data"))
  monkeypatch.setattr(train, "load_pretrained", lambda *a, **k: touched.append("model"))
  w = tmp_path / "w"
  code = cli.main(["fedlora", "--config", os.path.join(ROOT, "configs", "tiny.py"),
                   f"--config.{key}={value}", f"--config.workdir={w}"])
  assert code == 2 and touched == [] and not w.exists()
  with pytest.raises(ConfigError, match=match):
    c = defaults()
    node = c
    *head, last = key.split(".")
    for p in head:
      node = node[p]
    node[last] = value
    typed(c)


def test_unknown_key_in_a_config_is_named():
  c = defaults().to_dict()
  c["fed"]["round"] = 3
  with pytest.raises(ConfigError, match=r"config\.fed has no key\(s\) \['round'\]"):
    typed(c)


def test_workdirs_written_before_the_sections_keep_their_fingerprint():
  """A fingerprint stored before a key existed (its items lack the key) is this config's, for every
  config file, as long as the key is at the value of the behaviour from before (ADDED_KEYS)."""
  from fedlora.run.fingerprint import ADDED_KEYS, fingerprint, fingerprint_hash, same_config
  for name, variants in CONFIG_FILES.items():
    for variant in variants:
      c = load_config_file(name, variant)  # (not validated: some need data prepared beforehand)
      fp = fingerprint(c)
      old_items = {k: v for k, v in flat(c.to_dict()).items() if k in fp["items"] or k in ADDED_KEYS}
      old_items = {k: v for k, v in old_items.items() if not (k in ADDED_KEYS and v == ADDED_KEYS[k])}
      stored = {"hash": fingerprint_hash(dict(old_items, **{"data.max_length": -5})), "items": old_items}
      assert same_config(stored, fp), (name, variant)  # the stored hash is stale; its items decide
      changed = dict(old_items, seed=c.seed + 1)  # a real difference is still one
      assert not same_config({"hash": "0", "items": changed}, fp)


def test_fingerprints_recorded_before_the_sections_still_match():
  """tests/fixtures/fingerprints_before_sections.json: the fingerprint of every config file and
  variant as the code before the typed sections computed it (what those workdirs hold). Each is
  this code's same config; so workdirs written then resume."""
  from fedlora.run.fingerprint import fingerprint, same_config
  with open(os.path.join(ROOT, "tests", "fixtures", "fingerprints_before_sections.json")) as f:
    stored = json.loads(f.read().replace("<ROOT>", ROOT))  # the checkout the fixture was recorded in
  assert len(stored) == 13
  for key, fp in stored.items():
    name, variant = key.split(":")
    assert same_config(fp, fingerprint(load_config_file(name, variant))), key
