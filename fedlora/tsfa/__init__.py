"""TSFA: two-stage federated algorithm (offline rank/V/ρ_min choice, online Lyapunov ρ and bandwidth).

Modules: `projection` (simplex / box projections), `bound` (convergence-bound terms shared by both
stages), `online` (per-round drift-plus-penalty solver, optax-style state), `offline` (rank choice),
`cli` (`python -m fedlora.tsfa.cli`), `pilot` (the offline stage inside a run:
`tsfa.offline.enabled`).
"""
from fedlora.tsfa.bound import (BoundTerms, PilotConstants, bound_terms, client_latency,
                                covariance_error, fit_geometric_decay, geometric_profile, kept_mass,
                                normalise_profile, payload_bits, representation_error, smooth_max,
                                soft_payload_model, sparsification_error)
from fedlora.tsfa.offline import OfflineResult, candidate_ranks, choose, format_table
from fedlora.tsfa.online import (Diagnostics, OnlineConfig, RoundInputs, TSFAState, init,
                                 make_inputs, objective, observe, plan, solve, update)
from fedlora.tsfa.projection import project_box, project_simplex

__all__ = [
    "BoundTerms", "PilotConstants", "bound_terms", "client_latency", "covariance_error",
    "fit_geometric_decay", "geometric_profile", "kept_mass", "normalise_profile", "payload_bits",
    "representation_error", "smooth_max", "soft_payload_model", "sparsification_error",
    "OfflineResult", "candidate_ranks", "choose", "format_table",
    "Diagnostics", "OnlineConfig", "RoundInputs", "TSFAState", "init", "make_inputs", "objective",
    "observe", "plan", "solve", "update", "project_box", "project_simplex",
]
