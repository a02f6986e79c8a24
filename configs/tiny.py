"""Seconds-long variant of the default experiment, used by the tests: 2 MiniLM layers, 32 tokens,
240 BBC examples over 4 clients, 2 rounds. Run: python -m fedlora.train --config configs/tiny.py"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bbc_minilm  # noqa: E402


def get_config(arg=None):
  c = bbc_minilm.get_config("tiny")
  c.workdir = "runs/tiny"  # output folder
  return c
