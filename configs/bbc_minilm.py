"""Default experiment: federated LoRA fine-tuning of all-MiniLM-L6-v2 on BBC News (5 classes).

20 clients with Dirichlet(0.5) label skew, 10 sampled per round, SCAFFOLD drift control (the default
recipe: `--config.client.scaffold=False` gives plain FedAvg). Every key is at its default: the
defaults are the fields of the config sections (fedlora/config.py lists where each is declared;
`--print_config` shows them all). Run:
  python -m fedlora --config configs/bbc_minilm.py [--config.fed.rounds=30 ...]
Variant `tiny` (`--config configs/bbc_minilm.py:tiny`): seconds long, what the tests use.
"""
from fedlora.config import defaults


def get_config(arg=None):
  c = defaults()
  if arg == "tiny":
    c.name = "bbc_minilm_tiny"
    c.model.num_layers = 2  # 2 of MiniLM's 6 layers
    c.data.max_length = 32
    c.data.max_examples = 240  # a stratified subset
    c.data.num_clients = 4
    c.data.min_examples_per_client = 4
    c.fed.rounds = 2
    c.fed.clients_per_round = 2
    c.fed.local_steps = 2
    c.fed.batch_size = 4
    c.eval.every = 1
    c.eval.batch_size = 32
    c.checkpoint.every = 1
    c.client.scaffold = False  # the tests' reference recipe is plain FedAvg (SCAFFOLD has its own tests)
    c.progress = False
  elif arg not in (None, ""):
    raise ValueError(f"configs/bbc_minilm.py: unknown variant {arg!r}; allowed: '' or 'tiny'")
  return c
