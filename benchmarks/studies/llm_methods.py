"""The method comparison on the real LLM task: SmolLM2-135M-Instruct on MultiEmo, 20 clients by
domain (configs/lm_smollm2.py), each compressor at ρ = 1/4 of rank 8 against the uncompressed run
and dense rank 2 (what a rank-8 sparsifier at ρ = 1/4 sends). The wireless uplink is off
(wireless.enabled=False): no upload is dropped, so the rows differ only in what is compressed.

  python -m fedlora.sweep --config configs/lm_smollm2.py --study benchmarks/studies/llm_methods.py \\
      --seeds 0,1 --reference label=ideal --dir runs/sweep-llm_methods \\
      --out benchmarks/results/llm_methods.json --set fed.rounds=6 --set fed.local_steps=3 \\
      --set data.max_examples=2000 --set eval.every=6

(the shape of benchmarks/bench_llm.py: 6 rounds of 5 clients x 3 local steps, 1,800 training and
200 test sentences, sized for a 2-core CPU)
"""
OFF = {"wireless.enabled": [False], "eval.zero_shot": [False]}


def _point(label, method, **kw):
  return {"_label": label, "method.name": [method], **OFF, **{k: [v] for k, v in kw.items()}}


STUDY = [
    _point("ideal", "ideal"),
    _point("ideal_r2", "ideal", **{"lora.rank": 2}),
    _point("soft_r4", "soft", **{"method.ratio": 0.25}),
    _point("svd_r4", "svd", **{"method.ratio": 0.25}),
    _point("topk_r4", "topk", **{"method.ratio": 0.25}),
    _point("randk_r4", "randk", **{"method.ratio": 0.25}),
]


ARGS = ["--config", "configs/lm_smollm2.py", "--study", "benchmarks/studies/llm_methods.py",
        "--seeds", "0,1", "--reference", "label=ideal", "--dir", "runs/sweep-llm_methods",
        "--out", "benchmarks/results/llm_methods.json", "--set", "fed.rounds=6", "--set", "fed.local_steps=3",
        "--set", "data.max_examples=2000", "--set", "eval.every=6"]

if __name__ == "__main__":  # the command above; extra arguments are appended (e.g. --seeds 0,1,2)
  import os
  import sys
  os.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  os.execv(sys.executable, [sys.executable, "-m", "fedlora.sweep", *ARGS, *sys.argv[1:]])
