"""Pretrained transformer models in Flax NNX (pure forward; LoRA attaches to any `Linear` by path).

- `BertClassifier`: BERT/RoBERTa/MiniLM encoder + mean/CLS pooling + `classifier` head.
- `LlamaForCausalLM`: Llama/Mistral/Qwen2 decoder-only causal LM.
- `load_pretrained(path, ...)`: a local Hugging Face-format folder -> one of the above.
"""
from fedlora.models.bert import BertClassifier, BertConfig
from fedlora.models.hf_loading import load_pretrained, read_config
from fedlora.models.llama import LlamaConfig, LlamaForCausalLM

__all__ = ["BertClassifier", "BertConfig", "LlamaConfig", "LlamaForCausalLM", "load_pretrained",
           "read_config"]
