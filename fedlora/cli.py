"""The command line: `python -m fedlora [--config FILE.py[:VARIANT]] [--config.KEY=VALUE ...]`.

Parses the config file and overrides (ml_collections), validates the whole config (fedlora.config),
and runs the trainer (fedlora.train.run) inside one error boundary: every expected failure is one
`error:` paragraph with exit code 2 (130 for Ctrl-C); tracebacks with --config.debug=True.
`--help` lists the config files, `--print_config` prints every key and exits.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from fedlora.config import typed  # noqa: E402
from fedlora.run.errors import RunWarning, explain  # noqa: E402
from fedlora.run.workdir import resolve_workdir  # noqa: E402
from fedlora.section import ConfigError  # noqa: E402
from fedlora.train import run  # noqa: E402

EXIT_INCOMPLETE = 3  # the run finished but its summary lacks rounds (summary.metric_rounds_missing)


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def usage() -> str:
  """`--help`: usage, the config files and where their keys come from."""
  import ast
  import glob
  lines = ["usage: python -m fedlora [--config FILE.py[:VARIANT]] [--config.KEY=VALUE ...] "
           "[--print_config]", "",
           "Every key has its default in a config section (fedlora/config.py lists where each is "
           "declared, with what it means); a config file overrides some. Config files (configs/):"]
  for f in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))):
    with open(f) as fh:
      doc = (ast.get_docstring(ast.parse(fh.read())) or "").split("\n")[0]
    lines.append(f"  configs/{os.path.basename(f):22s} {doc}")
  lines += ["", "Default: --config configs/bbc_minilm.py; variants: configs/bbc_minilm.py:tiny (and "
            "configs/wireless_compare.py:tiny, configs/lm_instruct.py:tiny).",
            "Override any key: --config.a.b=value, e.g. --config.fed.rounds=30 --config.method.name=soft",
            "--print_config prints every key and its value for the chosen config and overrides, then exits.",
            "Outputs: config.workdir (default runs/<name>-<method>-s<seed>). Rerunning the same command "
            "resumes; --config.resume=auto|never|must (resume if same config | fresh only | resume only).",
            "Errors are one paragraph (exit 2; 130 for Ctrl-C); --config.debug=True shows tracebacks."]
  return "\n".join(lines)


def _config_arg(argv: list[str]) -> str | None:
  for i, a in enumerate(argv[1:], 1):
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith("--config="):
      return a.split("=", 1)[1]
  return None


def _load_config_file(file: str, variant: str | None):
  """Runs the config file's get_config(variant) once, so its own error is the message (absl would
  wrap it with a traceback)."""
  import importlib.util
  try:
    spec = importlib.util.spec_from_file_location("_fedlora_config", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*([variant] if variant is not None else []))
  except Exception as e:  # noqa: BLE001 - any failure of the user's config file
    raise ConfigError(f"--config {file}{':' + variant if variant is not None else ''}: "
                      f"{type(e).__name__}: {e}") from None


def parse_config(argv: list[str]):
  """`--config path.py[:arg]` plus `--config.a.b=value` overrides, with clear errors.

  Returns `(config, print_config)`."""
  from absl import flags
  from ml_collections import config_flags
  cfg_arg = _config_arg(argv)
  if cfg_arg is not None:
    file = cfg_arg.split(":", 1)[0]
    if not os.path.isfile(file):
      avail = sorted(f"configs/{n}" for n in os.listdir(CONFIG_DIR) if n.endswith(".py"))
      raise ConfigError(f"--config {file!r}: no such config file (run from the repository root, or "
                        f"give a path); available: {avail}; see --help")
    _load_config_file(file, cfg_arg.split(":", 1)[1] if ":" in cfg_arg else None)
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", "configs/bbc_minilm.py", flag_values=fv,
                                           lock_config=True)
  print_config = "--print_config" in argv
  argv = [a for a in argv if a != "--print_config"]
  saved, sys.argv = sys.argv, argv  # ml_collections finds the overrides' config file in sys.argv
  try:
    fv(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    msg = str(e).replace("\\n", " ").replace("\n", " ")
    raise ConfigError(f"bad command line {bad}: {msg}. Keys and types are those of the config "
                      "sections (fedlora/config.py says where each is declared with its meaning; "
                      "--print_config lists them, --help for usage)") from None
  finally:
    sys.argv = saved
  return holder.value, print_config


_HELP = ("-h", "--help", "-help", "--helpfull", "--helpshort")


def main(argv=None) -> int:
  """The CLI and its error boundary: an expected failure is one `error:` paragraph, exit code 2
  (130 for Ctrl-C); only `--config.debug=True` prints the traceback (before the same message)."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in _HELP for a in argv[1:]):
    print(usage())
    return 0
  debug = any(a.lower() in ("--config.debug=true", "--config.debug=1") for a in argv[1:])
  old_show = warnings.showwarning

  def show(message, category, *args, **kwargs):
    if issubclass(category, RunWarning):
      print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
      old_show(message, category, *args, **kwargs)
  warnings.showwarning = show
  try:
    config, print_config = parse_config(argv)
    debug = bool(config.debug)
    typed_config = typed(config)  # the whole config validated before anything is read or loaded
    if print_config:
      print(typed_config.replace(workdir=resolve_workdir(typed_config)).to_configdict())
      return 0
    summary = run(typed_config)
  except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - the CLI's one error boundary
    code, msg = explain(e)
    if debug:
      traceback.print_exc()
    print(f"error: {msg}", file=sys.stderr)
    return code
  finally:
    warnings.showwarning = old_show
  if "process_index" in summary:  # multi-process: a process other than 0 wrote and reports nothing
    return 0
  head = summary.get("headline", "test_accuracy")
  print(json.dumps({k: summary.get(k) for k in ("method", "rounds", f"final_{head}",
                                                "cum_uplink_bytes", "wall_seconds_this_invocation")}))
  value = summary.get(f"final_{head}")
  shown = "n/a" if value is None else (f"{100 * value:.2f}%" if head == "test_accuracy" else f"{value:.4f}")
  print(f"final {head.replace('_', ' ')} {shown} | uplink {summary['cum_uplink_bytes'] / 1e6:.2f} MB"
        f" | outputs in {summary['workdir']}")
  if summary.get("metric_rounds_missing"):
    print(f"error: summary.json lacks round(s) {summary['metric_rounds_missing']}: metrics.jsonl holds "
          "no record of them (a torn or deleted line), so the figures above omit them; the model "
          "state is intact in the checkpoints", file=sys.stderr)
    return EXIT_INCOMPLETE
  return 0


def quiet_library_logs() -> None:
  """Library error logs and background-thread tracebacks (orbax's writer threads log each failure with
  its traceback, also while the interpreter shuts down) become silent or one `warning:` line in the
  CLI: the error boundary reports the failure once. `--config.debug=True` keeps them."""
  import logging
  import threading
  for name in ("absl", "asyncio"):
    logging.getLogger(name).setLevel(logging.CRITICAL)

  def one_line(exc_type, exc, *_):  # e.g. tensorstore callbacks into a closed event loop after a failure
    if "Event loop is closed" not in str(exc):
      print(f"warning: background {exc_type.__name__}: {exc}", file=sys.stderr)
  sys.excepthook = one_line
  threading.excepthook = lambda a: one_line(a.exc_type, a.exc_value)
  sys.unraisablehook = lambda u: one_line(u.exc_type, u.exc_value)


def entry() -> int:
  """`python -m fedlora` (and the `fedlora` console script)."""
  if not any(a.lower() in ("--config.debug=true", "--config.debug=1") for a in sys.argv[1:]):
    quiet_library_logs()
  return main()
