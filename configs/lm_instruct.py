"""Federated instruction tuning of a decoder LLM (Llama / Mistral / Qwen2 / GPT-2 checkpoint) with LoRA.

  python -m fedlora --config configs/lm_instruct.py --config.model.path=/data/Qwen2.5-0.5B \
      --config.data.path=/data/alpaca.jsonl --config.data.prompt_column=instruction \
      --config.data.response_column=output
  python -m fedlora --config configs/lm_instruct.py:tiny     # seconds: tiny random checkpoint

No pretrained decoder weights are installable offline here: `tiny` runs a tiny RANDOM Llama
(tests/fixtures/tiny_llama3: GQA, llama3 rope scaling, tied embeddings, a character tokenizer) on
240 generated short-answer instructions; it shows the pipeline, not quality. Every key of
the config sections exists here too (`--print_config`); the keys below differ from the defaults.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bbc_minilm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(arg=None):
  c = bbc_minilm.get_config()
  c.name = "lm_instruct"  # experiment name: the default workdir is runs/lm_instruct-<method>-s<seed>
  c.task.name = "causal_lm"  # next-token loss on the response tokens only (fedlora/tasks/causal_lm.py)
  c.client.scaffold = False  # FedAvg: the SCAFFOLD default is measured on classification only

  c.model.package = ""  # no packaged checkpoint: model.path is required (an HF-format folder)

  c.data.source = "json"  # 'json' (also JSONL) | 'csv' | 'parquet' | 'disk' (save_to_disk folder)
  c.data.max_length = 512  # tokens per row: the prompt is cut from the left, then the response on the right
  c.data.partition = "quantity"  # 'iid' | 'dirichlet' (over data.category_column) | 'quantity' (size skew)
  c.data.min_examples_per_client = 4  # every client gets at least this many training examples
  c.data.test_fraction = 0.05  # held-out fraction (stratified by category when there is one)

  c.lora.targets = ()  # () = the model family's default (q_proj, v_proj for Llama; c_attn for GPT-2)
  c.lora.rank = 16  # LoRA rank r
  c.lora.alpha = 32.0  # W = W0 + (alpha / r) * A @ B

  c.fed.clients_per_round = 5  # clients sampled per round
  c.fed.local_steps = 10  # optimizer steps per client per round
  c.fed.batch_size = 4  # rows per local step
  c.optim.lr = 2e-4  # client AdamW learning rate

  c.eval.batch_size = 8  # rows per evaluation forward pass

  if arg == "tiny":
    c.name = "lm_instruct_tiny"
    c.model.path = os.path.join(ROOT, "tests", "fixtures", "tiny_llama3")
    c.data.path = os.path.join(ROOT, "tests", "fixtures", "tiny_instruct.jsonl")
    c.data.category_column = "category"
    c.data.partition = "dirichlet"
    c.data.dirichlet_alpha = 1.0
    c.data.max_length = 32
    c.data.test_fraction = 0.2
    c.data.num_clients = 4
    c.lora.targets = ("self_attn/(q_proj|k_proj|v_proj|o_proj)", "mlp/(gate_proj|up_proj|down_proj)")
    c.lora.rank = 4
    c.lora.alpha = 8.0
    c.fed.rounds = 3
    c.fed.clients_per_round = 4
    c.fed.local_steps = 4
    c.fed.batch_size = 8
    c.optim.lr = 1e-2
    c.eval.every = 1
    c.eval.batch_size = 48
    c.eval.max_new_tokens = 4
    c.eval.print_samples = 2
    c.checkpoint.every = 1
    c.progress = False
  elif arg not in (None, ""):
    raise ValueError(f"configs/lm_instruct.py: unknown variant {arg!r}; allowed: '' or 'tiny'")
  return c
