"""End to end on the tiny config: bad input is named before training, resume == uninterrupted run,
a zero-noise infinite-bandwidth channel reproduces the ideal run."""
import json
import math
import os
import platform
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from fedlora import train
from fedlora.utils.checkpoint import Checkpointer
from fedlora.utils.metrics import read_metrics
from fedlora.config import typed
from fedlora.section import ConfigError
from fedlora.utils.model_path import resolve_model_path


@pytest.mark.parametrize("key,value,match", [
    ("fed.clients_per_round", 9, "fed.clients_per_round=9"),
    ("data.partition", "zipf", "data.partition='zipf'"),
    ("model.pooling", "max", "model.pooling='max'"),
    ("optim.name", "lion", "optim.name='lion'"),
    ("data.test_fraction", 1.5, "data.test_fraction=1.5"),
    ("fed.local_steps", 0, "fed.local_steps=0"),
    ("model.path", "/no/such/model", "/no/such/model"),
    ("data.source", "csv", "data.path"),
    ("fed.client_chunk", -1, "fed.client_chunk=-1"),
    ("fed.memory_budget_gb", -2.0, "fed.memory_budget_gb=-2.0"),
    ("fed.cpu_chunk_tokens", -1, "fed.cpu_chunk_tokens=-1"),
    ("model.remat", "sometimes", "model.remat='sometimes'"),
    ("model.compute_dtype", "float16", "model.compute_dtype='float16'"),
    ("model.grad_barrier", None, "model.grad_barrier=None"),
    ("mesh.model", 0, "mesh.model=0"),
])
def test_bad_config_values_are_named(key, value, match):
  with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace("(", r"\(")):
    c = tiny_config(**{key: value})
    resolve_model_path(typed(c).model)


def test_bad_data_is_rejected_before_training(tmp_path):
  csv = tmp_path / "d.csv"
  csv.write_text("body,topic\nhello world,a\nbye world,b\n")
  c = tiny_config(**{"data.source": "csv", "data.path": str(csv), "workdir": str(tmp_path / "w")})
  with pytest.raises(ValueError, match="text"):  # the default text_column does not exist
    train.build(c)
  c.data.text_column, c.data.label_column = "body", "topic"
  with pytest.raises(ValueError, match="num_clients|clients"):  # 4 clients, 2 examples
    train.build(c)
  assert not os.path.exists(tmp_path / "w")  # nothing was written


def test_cli_rejects_unknown_key_and_bad_type():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for arg, match in (("--config.fed.roundz=3", "config.fed.roundz"),
                     ("--config.fed.rounds=abc", "abc")):
    p = subprocess.run([sys.executable, "-m", "fedlora", "--config",
                        os.path.join(ROOT, "configs/tiny.py"), arg], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert match in p.stderr


def test_method_name_is_validated():
  with pytest.raises(ValueError, match="method.name='fedprox'"):
    c = tiny_config(**{"method.name": "fedprox"})
    from fedlora.methods import build_method
    build_method(typed(c))


def _final_trainable(workdir, like):
  ck = Checkpointer(workdir, 2)
  state = ck.restore(ck.latest_step(), like)
  ck.close()
  return state


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
  c_full = tiny_config(**{"workdir": str(tmp_path / "full"), "fed.rounds": 3})
  s_full = train.run(c_full)

  c_int = tiny_config(**{"workdir": str(tmp_path / "int"), "fed.rounds": 3})
  real_build = train.build

  def build_crashing_at_3(c):
    exp = real_build(c)
    real_round = exp.algorithm.apply

    def crash_at_3(state, t):
      if t == 3:
        raise KeyboardInterrupt("simulated interruption")
      return real_round(state, t)
    return exp._replace(algorithm=exp.algorithm._replace(apply=crash_at_3))
  monkeypatch.setattr(train, "build", build_crashing_at_3)
  with pytest.raises(KeyboardInterrupt):
    train.run(c_int)
  assert [r["round"] for r in read_metrics(str(tmp_path / "int/metrics.jsonl"))] == [1, 2]
  monkeypatch.setattr(train, "build", real_build)
  s_int = train.run(c_int)  # same command again: resumes from round 2
  assert s_int["resumed_from_round"] == 2
  assert s_int["final_test_accuracy"] == s_full["final_test_accuracy"]
  m_full = read_metrics(str(tmp_path / "full/metrics.jsonl"))
  m_int = read_metrics(str(tmp_path / "int/metrics.jsonl"))
  assert [r["round"] for r in m_int] == [1, 2, 3]
  for a, b in zip(m_full, m_int):
    assert a["train_loss"] == b["train_loss"] and a["clients"] == b["clients"]
  exp = train.build(c_full)
  like = exp.algorithm.init()
  chex.assert_trees_all_equal(_final_trainable(c_full.workdir, like)["trainable"],
                              _final_trainable(c_int.workdir, like)["trainable"])
  for f in ("summary.json", "plot.png", "config.json"):
    assert os.path.exists(tmp_path / "full" / f)


def test_zero_noise_infinite_bandwidth_channel_reproduces_ideal(tmp_path):
  ideal = tiny_config(**{"workdir": str(tmp_path / "ideal"), "checkpoint.every": 10})
  s_ideal = train.run(ideal)
  chan = tiny_config(**{"workdir": str(tmp_path / "chan"), "checkpoint.every": 10,
                        "wireless.enabled": True, "wireless.deadline_factor": math.inf,
                        "wireless.channel.noise_psd_dbm_hz": -300.0,
                        "wireless.channel.bandwidth_hz": 1e18})
  s_chan = train.run(chan)
  assert s_chan["final_test_accuracy"] == s_ideal["final_test_accuracy"]
  ri = read_metrics(str(tmp_path / "ideal/metrics.jsonl"))
  rc = read_metrics(str(tmp_path / "chan/metrics.jsonl"))
  for a, b in zip(ri, rc):
    assert a["train_loss"] == b["train_loss"]
    assert b["deadline_misses"] == 0 and max(b["upload_latency"]) < 1e-6
  exp = train.build(ideal)
  like = exp.algorithm.init()
  like_c = train.build(chan).algorithm.init()
  chex.assert_trees_all_equal(_final_trainable(ideal.workdir, like)["trainable"],
                              _final_trainable(chan.workdir, like_c)["trainable"])


def test_deadline_drops_are_counted_and_never_aggregated(tmp_path):
  """A deadline no upload can meet: every upload is dropped, counted, and the model stays put."""
  c = tiny_config(**{"workdir": str(tmp_path / "w"), "fed.rounds": 2, "method.name": "soft",
                     "method.allocation": "fixed", "method.ratio": 0.5, "wireless.enabled": True,
                     "wireless.deadline_factor": 1e-9})
  train.run(c)
  recs = read_metrics(str(tmp_path / "w/metrics.jsonl"))
  assert all(r["deadline_misses"] == 2 and r["uplink_bytes_round"] == 0 for r in recs)
  assert all(r["delivered"] == [0.0, 0.0] for r in recs)
  exp = train.build(c)
  like = exp.algorithm.init()
  chex.assert_trees_all_equal(_final_trainable(c.workdir, like)["trainable"], exp.parts.trainable)


def test_sharded_client_axis_equals_single_device():
  """With 2 (forced host) devices the client axis is sharded; results equal the 1-device run."""
  code = """
import os, sys, json
sys.path.insert(0, %r); sys.path.insert(0, os.path.join(%r, 'tests'))
import jax, jax.numpy as jnp, numpy as np
from conftest import tiny_config
from fedlora.train import build
out = {}
for n in (1, 2):
  exp = build(tiny_config(**{'mesh.num_devices': n}))
  g = exp.parts.trainable
  fns = exp.round_fns
  comp = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (4,) + x.shape), fns.init_client(g))
  o, _ = fns.client_phase(g, exp.parts.frozen, exp.clients, jnp.array([0, 3]),
                          jax.random.PRNGKey(5), jnp.ones(2), comp, fns.context(fns.init_server(g), 1))
  out[n] = np.asarray(o.delta['classifier']['kernel'])
print(json.dumps({'devices': jax.device_count(), 'maxdiff': float(np.abs(out[1] - out[2]).max()),
                  'scale': float(np.abs(out[1]).max())}))
""" % (ROOT, ROOT)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.loads(p.stdout.strip().splitlines()[-1])
  assert res["devices"] == 2 and res["scale"] > 0
  assert res["maxdiff"] <= 1e-5 * max(1.0, res["scale"])


def test_2d_mesh_8_devices_equals_single_device():
  """8 forced host devices as a 4 × 2 (clients × model) mesh with the frozen base sharded over
  'model', K=3 clients in chunks of 2 (padded to the 4 client devices): the same round as on one
  device. Tolerance: a sharded frozen base changes XLA's summation order (all-gathered weights,
  partitioned dots), so float32 round-off (~1e-7 relative per op) may differ; 1e-5 of the scale."""
  code = """
import os, sys, json
sys.path.insert(0, %r); sys.path.insert(0, os.path.join(%r, 'tests'))
import jax, jax.numpy as jnp, numpy as np
from conftest import tiny_config
from fedlora.train import build
out = {}
for name, over in (('one', {'mesh.num_devices': 1}),
                   ('mesh', {'mesh.num_devices': 8, 'mesh.model': 2, 'mesh.shard_frozen': True})):
  exp = build(tiny_config(**over, **{'fed.clients_per_round': 3, 'fed.client_chunk': 2,
                                     'optim.name': 'sgd', 'optim.lr': 0.5}))
  g = exp.parts.trainable
  o, _ = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, jnp.array([0, 1, 3]),
                                    jax.random.PRNGKey(5), jnp.ones(3),
                                    exp.round_fns.init_client_states(g, 4), exp.round_fns.context(exp.round_fns.init_server(g), 1))
  new, _ = exp.round_fns.server_phase(g, exp.round_fns.init_server(g), o.delta, jnp.ones(3), 1)
  out[name] = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(new)])
  if name == 'mesh':
    k = exp.parts.frozen['encoder']['layers'][0]['mlp']['intermediate']['kernel']
    spec = str(k.sharding.spec)
print(json.dumps({'devices': jax.device_count(), 'spec': spec,
                  'maxdiff': float(np.abs(out['one'] - out['mesh']).max()),
                  'scale': float(np.abs(out['one']).max())}))
""" % (ROOT, ROOT)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.loads(p.stdout.strip().splitlines()[-1])
  assert res["devices"] == 8 and "model" in res["spec"]
  assert res["maxdiff"] <= 1e-5 * max(1.0, res["scale"])


_MP_WORKER = """
import os, sys, json
ROOT, pid, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, ROOT); sys.path.insert(0, os.path.join(ROOT, 'tests'))
import numpy as np
import jax
from jax.experimental import multihost_utils
from conftest import tiny_config
from fedlora.train import build
over = {'fed.clients_per_round': 4, 'fed.client_chunk': 4, 'optim.name': 'sgd', 'optim.lr': 0.5,
        'mesh.coordinator_address': '127.0.0.1:' + port, 'mesh.num_processes': 2, 'mesh.process_id': pid}
exp = build(tiny_config(**over))
g = exp.parts.trainable
key = np.asarray(jax.random.key_data(jax.random.PRNGKey(5)))
o, _ = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, np.arange(4, dtype=np.int32), key,
                                  np.ones(4, np.float32), exp.round_fns.init_client_states(g, 4),
                                  exp.round_fns.context(exp.round_fns.init_server(g), 1))
new = multihost_utils.process_allgather(exp.round_fns.server_phase(
    g, exp.round_fns.init_server(g), o.delta, np.ones(4, np.float32), 1)[0], tiled=True)
vec = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(new)])
# N = 5 clients on the 4-wide 'clients' axis: padded to 8 rows, process 1 hosts client 4 + 3 pad rows
from fedlora.data.clients import ClientData
from fedlora.fed.sharding import client_mesh, hosted_clients, place_hosted_clients
mesh = client_mesh()
h5 = hosted_clients(5, mesh)
local = ClientData(arrays={'input_ids': np.repeat(h5[:, None, None] + 1, 3, 1).repeat(2, 2).astype(np.int32)},
                   num_examples=np.full(h5.shape, 3, np.int32))
p5 = place_hosted_clients(local, h5, np.full((5,), 3, np.int32), mesh)
pad = {r: int(np.asarray(s.data[j]).max()) for s in p5.input_ids.addressable_shards
       for j, r in enumerate(range(*s.index[0].indices(8)))}
from fedlora.run.processes import all_true, broadcast_text
agree = [broadcast_text('h\u00e9llo' if pid == 0 else 'other'), broadcast_text(None),
         all_true(True), all_true(pid == 0)]
ids = exp.clients.input_ids  # [N_pad, n_max, L] sharded over 'clients': this process's rows only
rows = {}
for s in ids.addressable_shards:
  for j, r in enumerate(range(*s.index[0].indices(ids.shape[0]))):
    rows[r] = int(np.asarray(s.data[j], np.int64).sum())
print('RESULT ' + json.dumps({'devices': jax.device_count(), 'local': jax.local_device_count(),
                              'vec': vec.tolist(), 'shape': list(ids.shape), 'rows': rows,
                              'hosted_clients': exp.data.info['hosted_clients'], 'h5': h5.tolist(),
                              'pad': pad, 'shape5': list(p5.input_ids.shape), 'n5': p5.num_clients,
                              'agree': agree,
                              'hosted_examples': exp.data.info['hosted_examples'],
                              'part_sizes': [len(p) for p in exp.data.info['parts']],
                              'num_examples': np.asarray(exp.clients.num_examples).tolist()}), flush=True)
"""


def test_two_processes_two_devices_each_equal_single_device(tmp_path):
  """2 local processes × 2 CPU devices (gloo collectives, jax.distributed.initialize from the config)
  run one round on a 4-device client mesh; both processes get the single-device result.
  Tolerance as for the 8-device test (float32 round-off of a different partitioning).
  Each process holds (addressable shards) and tokenised only the clients of its own 2 devices: half
  of the 4 clients, disjoint, together all of them, with the single-device run's rows and sizes."""
  import socket
  import jax.numpy as jnp
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  logs = [(open(tmp_path / f"out{i}", "w"), open(tmp_path / f"err{i}", "w")) for i in range(2)]
  # files, not pipes: a full pipe would stall one process and break the shutdown barrier
  procs = [subprocess.Popen([sys.executable, "-c", _MP_WORKER, ROOT, str(i), port], cwd=ROOT, env=env,
                            stdout=o, stderr=e, text=True) for i, (o, e) in enumerate(logs)]
  outs = []
  try:
    for i, p in enumerate(procs):
      p.wait(timeout=600)
      out, err = (tmp_path / f"out{i}").read_text(), (tmp_path / f"err{i}").read_text()
      assert p.returncode == 0, err[-2000:]
      outs.append(json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  exp = train.build(tiny_config(**{"fed.clients_per_round": 4, "fed.client_chunk": 4,
                                   "optim.name": "sgd", "optim.lr": 0.5}))
  g = exp.parts.trainable
  o, _ = exp.round_fns.client_phase(g, exp.parts.frozen, exp.clients, jnp.arange(4), jax.random.PRNGKey(5),
                                    jnp.ones(4), exp.round_fns.init_client_states(g, 4), exp.round_fns.context(exp.round_fns.init_server(g), 1))
  new, _ = exp.round_fns.server_phase(g, exp.round_fns.init_server(g), o.delta, jnp.ones(4), 1)
  ref = np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(new)])
  scale = float(np.abs(ref).max())
  for r in outs:
    assert r["devices"] == 4 and r["local"] == 2
    assert float(np.abs(np.asarray(r["vec"]) - ref).max()) <= 1e-5 * max(1.0, scale)
  # client data: each process holds and built only its hosted clients (rows of its own devices)
  full = np.asarray(exp.clients.input_ids, np.int64)  # [4, n_max, L] of the single-process run
  hosted = [r["hosted_clients"] for r in outs]
  assert hosted == [[0, 1], [2, 3]]
  for r, mine in zip(outs, hosted):
    assert r["shape"] == list(full.shape)  # N = 4 = the 'clients' axis: no padding rows
    assert sorted(int(k) for k in r["rows"]) == mine
    assert {int(k): v for k, v in r["rows"].items()} == {k: int(full[k].sum()) for k in mine}
    assert r["hosted_examples"] == sum(r["part_sizes"][k] for k in mine) < sum(r["part_sizes"])
    assert r["num_examples"] == np.asarray(exp.clients.num_examples).tolist() == r["part_sizes"]
  assert all(r["agree"] == ["h\u00e9llo", None, True, False] for r in outs)  # process 0's text, consensus
  # 5 clients: rows padded to 8 (zeros, never sampled: num_clients stays 5), client k's row = k + 1
  assert [r["h5"] for r in outs] == [[0, 1, 2, 3], [4]]
  assert all(r["shape5"] == [8, 3, 2] and r["n5"] == 5 for r in outs)
  assert [{int(k): v for k, v in r["pad"].items()} for r in outs] == [{0: 1, 1: 2, 2: 3, 3: 4},
                                                                       {4: 5, 5: 0, 6: 0, 7: 0}]


def _two_process_cli(tmp_path, args, tag):
  """Runs `python -m fedlora ARGS` as 2 local processes × 2 CPU devices; (stdout, stderr) each."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  procs, logs = [], []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               FEDLORA_COORDINATOR="127.0.0.1:" + port, FEDLORA_NUM_PROCESSES="2", FEDLORA_PROCESS_ID=str(i))
    out, err = tmp_path / f"{tag}.out{i}", tmp_path / f"{tag}.err{i}"
    logs.append((out, err))
    with open(out, "w") as o, open(err, "w") as e:
      procs.append(subprocess.Popen([sys.executable, "-m", "fedlora", *args], cwd=ROOT, env=env,
                                    stdout=o, stderr=e, text=True))
  try:
    for p, (out, err) in zip(procs, logs):
      p.wait(timeout=600)
      assert p.returncode == 0, err.read_text()[-2000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return [(o.read_text(), e.read_text()) for o, e in logs]


@pytest.mark.slow
def test_two_process_cli_run_equals_single_process_resumes_and_moves_corrupt_step_once(tmp_path):
  """The CLI as 2 processes × 2 devices (client data sharded, each process building its own clients):
  the same metrics as one process; process 0 alone writes and reports; a corrupt newest checkpoint is
  moved once (by process 0) and both processes resume from the previous step."""
  base = ["--config", "configs/bbc_minilm.py:tiny", "--config.progress=False"]
  w = tmp_path / "mp"
  outs = _two_process_cli(tmp_path, base + ["--config.fed.rounds=2", f"--config.workdir={w}"], "a")
  assert "final test accuracy" in outs[0][0] and "final" not in outs[1][0]
  p = subprocess.run([sys.executable, "-m", "fedlora", *base, "--config.fed.rounds=2",
                      f"--config.workdir={tmp_path / 'one'}"], cwd=ROOT, capture_output=True, text=True,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  mp, one = read_metrics(str(w / "metrics.jsonl")), read_metrics(str(tmp_path / "one/metrics.jsonl"))
  assert [r["clients"] for r in mp] == [r["clients"] for r in one]
  assert [r.get("test_accuracy") for r in mp] == [r.get("test_accuracy") for r in one]
  np.testing.assert_allclose([r["train_loss"] for r in mp], [r["train_loss"] for r in one], rtol=1e-5)
  for root, _, files in os.walk(w / "checkpoints" / "2" / "state"):  # truncate every array file
    for f in files:
      open(os.path.join(root, f), "w").close()
  outs = _two_process_cli(tmp_path, base + ["--config.fed.rounds=3", f"--config.workdir={w}"], "b")
  assert "checkpoints/2 is unreadable" in outs[0][1] and "unreadable" not in outs[1][1]
  assert len(os.listdir(w / "checkpoints_corrupt")) == 1
  assert json.load(open(w / "summary.json"))["resumed_from_round"] == 1


_FAULTS = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes, libc.free.argtypes = [ctypes.c_size_t], [ctypes.c_void_p]
def step():  # what an XLA:CPU call does with its temporaries: allocate 256 MiB, write it, free it
  p = libc.malloc(2**28); ctypes.memset(p, 1, 2**28); libc.free(p)
step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 4)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES is read by glibc only")
def test_launcher_allocator_settings_reuse_freed_memory():
  """The launchers' GLIBC_TUNABLES (launch/glibc_tunables.txt, exported by launch/env.sh) keep a freed
  256 MiB buffer in the process: allocating it again touches (almost) no fresh pages, where glibc's
  defaults hand back fresh mmap'd pages every time (65,536 faults of 4 KiB)."""
  sys.path.insert(0, ROOT)
  from benchmarks.common import launcher_tunables
  per = {}
  for name, value in (("launcher", launcher_tunables()), ("glibc", "")):
    env = dict(os.environ, GLIBC_TUNABLES=value)
    p = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    per[name] = int(p.stdout.strip())
  assert per["glibc"] >= 2**28 // 4096 // 2, per  # fresh pages each time (at least half of them)
  assert per["launcher"] < per["glibc"] // 20, per
