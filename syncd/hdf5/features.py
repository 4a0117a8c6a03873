"""Feature extractors computed with torch on batches of windows (`[features]` settings).

Band power: for each window and channel, the mean-square signal power that falls
in each frequency band, from the one-sided periodogram of the mean-removed window
(`torch.fft.rfft` along the last axis):

    P_k = c_k * |X_k|^2 / T^2,  c_k = 2 except 1 for the DC and Nyquist bins
    band_power[b] = sum of P_k over bins with lo_b <= f_k < hi_b,  f_k = k * sfreq / T

so the powers of bands that tile the spectrum add up to the window's variance.
`relative_band_power` divides by the sum over the configured bands;
`log_band_power` is log10 of band power (floored at 1e-30).

Each extractor is keyed by its name and a digest of its parameters (bands and
sampling rate), so changing one recomputes its features and nothing else. torch is
imported only when features are computed: the rest of syncd works without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from syncd.errors import ConfigError
from syncd.sinks.cache import feature_key

DEFAULT_BANDS: dict[str, list[float]] = {
    "delta": [0.5, 4.0], "theta": [4.0, 8.0], "alpha": [8.0, 13.0], "beta": [13.0, 30.0],
    "gamma": [30.0, 45.0],
}
FEATURES_DEFAULTS: dict[str, Any] = {
    "extractors": ["band_power"],
    "bands": DEFAULT_BANDS,
    "sfreq": 100.0,  # used when a file has no numeric `sfreq` attribute
    "batch_windows": 256,
    "torch_threads": 1,  # the warmer's inflate threads already keep the other cores busy
}
EXTRACTORS = ("band_power", "relative_band_power", "log_band_power")
VERSION = 1  # bump when a formula changes: every feature is then recomputed


@dataclass(frozen=True)
class FeatureConfig:
    """The validated `[features]` table."""

    extractors: tuple[str, ...]
    bands: tuple[tuple[str, float, float], ...]
    sfreq: float
    batch_windows: int
    torch_threads: int = 1


@dataclass(frozen=True)
class Extractor:
    """One extractor with its parameters fixed for one file (its sampling rate)."""

    name: str
    bands: tuple[tuple[str, float, float], ...]
    sfreq: float

    @property
    def params(self) -> dict[str, Any]:
        return {"bands": {b: [lo, hi] for b, lo, hi in self.bands}, "sfreq": self.sfreq,
                "version": VERSION}

    @property
    def key(self) -> str:
        return feature_key(self.name, self.params)

    def output_shape(self, window_shape: list[int]) -> list[int]:
        return [*window_shape[:-1], len(self.bands)]


def extractors_for(config: FeatureConfig, attrs: dict[str, Any]) -> list[Extractor]:
    """The configured extractors for a file, using its `sfreq` attribute when it has one."""
    sfreq = attrs.get("sfreq")
    if isinstance(sfreq, list) and len(sfreq) == 1:
        sfreq = sfreq[0]
    if not (isinstance(sfreq, (int, float)) and not isinstance(sfreq, bool)
            and math.isfinite(sfreq) and sfreq > 0):
        sfreq = config.sfreq
    return [Extractor(name, config.bands, float(sfreq)) for name in config.extractors]


def prepare_torch(config: FeatureConfig) -> None:
    """Load torch (or fail with one line) and size its thread pool for the warmer's process."""
    if config.extractors:
        require_torch().set_num_threads(config.torch_threads)


def require_torch() -> Any:
    """The torch module, or a one-line ConfigError saying how to get it or turn features off."""
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "features need torch, which is not installed: pip install torch==2.13.0 (the CPU "
            "wheel), then pip install '.[torch]' in the syncd clone; or set [features] "
            "extractors = [] to cache windows only") from None
    return torch


def compute(extractors: list[Extractor], windows: np.ndarray) -> dict[str, np.ndarray]:
    """Each extractor's features for a batch `(B, ..., T)` of windows, as float32 arrays.

    One FFT serves every extractor of the batch.
    """
    if not extractors:
        return {}
    torch = require_torch()
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        n = x.shape[-1]
        x = x - x.mean(dim=-1, keepdim=True)
        spectrum = torch.fft.rfft(x, dim=-1)
        power = spectrum.real.square() + spectrum.imag.square()
        weight = torch.full((power.shape[-1],), 2.0 / (n * n), dtype=torch.float32)
        weight[0] = 1.0 / (n * n)
        if n % 2 == 0:
            weight[-1] = 1.0 / (n * n)
        power = power * weight
        by_bands: dict[tuple[Any, ...], Any] = {}
        for ex in extractors:
            ident = (ex.bands, ex.sfreq)
            if ident not in by_bands:
                freqs = torch.fft.rfftfreq(n, d=1.0 / ex.sfreq).to(torch.float64)
                masks = torch.stack([((freqs >= lo) & (freqs < hi)) for _, lo, hi in ex.bands],
                                    dim=1).to(torch.float32)
                by_bands[ident] = power @ masks
            bp = by_bands[ident]
            if ex.name == "band_power":
                values = bp
            elif ex.name == "relative_band_power":
                total = bp.sum(dim=-1, keepdim=True)
                values = torch.where(total > 0, bp / total.clamp_min(1e-30),
                                     torch.zeros_like(bp))
            else:  # log_band_power
                values = torch.log10(bp.clamp_min(1e-30))
            out[ex.key] = np.ascontiguousarray(values.numpy(), dtype=np.float32)
    return out
