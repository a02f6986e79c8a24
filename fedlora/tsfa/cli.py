"""`python -m fedlora.tsfa.cli [flags]`: run the TSFA offline stage and print its table and choice.

Example (MiniLM-L6 query+value adapters in fp32: 12 adapters × (384 + 384) × 32 bits per component):
  python -m fedlora.tsfa.cli --r-max 32 --clients 10 --budget 2.0 --bits-per-component 294912 \
      --mask-bits-per-rank 12 --fixed-latency 0.5 --rep-decay 0.7 --drift 1.0
"""
from __future__ import annotations

import argparse
import json
import sys

from fedlora.tsfa.bound import PilotConstants
from fedlora.tsfa.offline import choose, format_table
from fedlora.wireless.channel import ChannelConfig


def _parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="fedlora.tsfa.cli", description=__doc__.splitlines()[0])
  ap.add_argument("--r-max", type=int, default=32, help="largest candidate rank (default 32)")
  ap.add_argument("--clients", type=int, default=10, help="clients per round K (default 10)")
  ap.add_argument("--budget", type=float, required=True, help="average latency budget τ̄ in seconds")
  ap.add_argument("--bits-per-component", type=float, default=294912.0,
                  help="payload of one rank component over all adapters (default: MiniLM q,v fp32)")
  ap.add_argument("--mask-bits-per-rank", type=float, default=12.0, help="ρ-independent bits per rank")
  ap.add_argument("--dense-bits", type=float, default=0.0, help="bits sent dense every round")
  ap.add_argument("--fixed-latency", type=float, default=0.0, help="compute (+downlink) seconds")
  ap.add_argument("--horizon", type=int, default=1000, help="rounds T for the V rule")
  ap.add_argument("--violation-tol", type=float, default=0.05, help="ε of the V rule")
  ap.add_argument("--max-drop", type=float, default=0.5, help="largest E(ρ_min) for the ρ_min rule")
  ap.add_argument("--bandwidth-hz", type=float, default=ChannelConfig().bandwidth_hz)
  ap.add_argument("--tx-power-dbm", type=float, default=ChannelConfig().tx_power_dbm)
  ap.add_argument("--cell-radius-m", type=float, default=ChannelConfig().cell_radius_m)
  for f in PilotConstants._fields:
    ap.add_argument("--" + f.replace("_", "-"), type=float, default=PilotConstants._field_defaults[f],
                    help=f"pilot constant {f} (default {PilotConstants._field_defaults[f]})")
  ap.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
  return ap


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  try:
    chan = ChannelConfig(bandwidth_hz=args.bandwidth_hz, tx_power_dbm=args.tx_power_dbm,
                         cell_radius_m=args.cell_radius_m)
    consts = PilotConstants(**{f: getattr(args, f) for f in PilotConstants._fields})
    res = choose(r_max=args.r_max, clients_per_round=args.clients, latency_budget=args.budget,
                 bits_per_component=args.bits_per_component, fixed_latency=args.fixed_latency,
                 channel=chan, consts=consts, mask_bits_per_rank=args.mask_bits_per_rank,
                 dense_bits=args.dense_bits, horizon_rounds=args.horizon,
                 violation_tol=args.violation_tol, max_drop=args.max_drop)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps({"rank": res.rank, "rho_min": res.rho_min, "V": res.V, "notes": list(res.notes),
                      "table": {k: v.tolist() for k, v in res.table.items()}}, indent=1))
  else:
    print(format_table(res))
  return 0


if __name__ == "__main__":
  sys.exit(main())
