"""'warmup': min(1, t / warmup_rounds), linear warm-up then constant (warmup_rounds = 0: constant)."""
from fedlora.schedules import SCHEDULES, warmup


@SCHEDULES.register("warmup")
def make(warmup_rounds: int, total_rounds: int, final_fraction: float):
  return lambda t: warmup(t, warmup_rounds)
