"""Wireless uplink model: channel constants and draws (`channel`), rates and latencies (`latency`)."""
from fedlora.wireless.channel import (ChannelConfig, ChannelState, RoundChannel, client_speeds,
                                      db_to_linear, draw_fading, estimate_gain, init, path_gain,
                                      path_loss_db, place_clients, sample_round)
from fedlora.wireless.latency import (Realised, compute_latency, downlink_latency, realise,
                                      round_latency, shannon_rate, snr_per_hz, spectral_rate,
                                      upload_latency)

__all__ = [
    "ChannelConfig", "ChannelState", "RoundChannel", "client_speeds", "db_to_linear", "draw_fading",
    "estimate_gain", "init", "path_gain", "path_loss_db", "place_clients", "sample_round",
    "Realised", "compute_latency", "downlink_latency", "realise", "round_latency", "shannon_rate",
    "snr_per_hz", "spectral_rate", "upload_latency",
]
