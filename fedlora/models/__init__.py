"""Pretrained transformer models in Flax NNX (pure forward; LoRA attaches to any `Linear` by path).

- `BertClassifier`: BERT/RoBERTa/MiniLM encoder + mean/CLS pooling + `classifier` head.
- `LlamaForCausalLM`: Llama/Mistral/Qwen2 decoder-only causal LM.
- `GPT2LMHeadModel`: GPT-2 causal LM (tied embeddings, Conv1D weights).
- `load_pretrained(path, ...)`: a local Hugging Face-format folder -> one of the above, by the
  family (`fedlora.models.families`) that declares its `model_type`; or a llama.cpp `.gguf` file
  (`fedlora.models.gguf`), by the family whose `GGUFSpec` reads its `general.architecture`.
- `fedlora.models.generate`: jitted greedy/temperature decoding with a KV cache.
"""
from fedlora.models.bert import BertClassifier, BertConfig
from fedlora.models.gpt2 import GPT2Config, GPT2LMHeadModel
from fedlora.models.hf_loading import load_pretrained, read_config
from fedlora.models.llama import LlamaConfig, LlamaForCausalLM

__all__ = ["BertClassifier", "BertConfig", "GPT2Config", "GPT2LMHeadModel", "LlamaConfig",
           "LlamaForCausalLM", "load_pretrained", "read_config"]
