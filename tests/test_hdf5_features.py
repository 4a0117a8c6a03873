"""Features: torch band power equals a direct computation; changing an extractor recomputes
its features and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from syncd.api.hdf5 import hdf5_follower
from syncd.api.hdf5_options import load_feature_config
from syncd.client.cache import WindowCache
from syncd.config import Settings
from syncd.errors import ConfigError
from syncd.hdf5.features import compute, extractors_for
from tests.hdf5_support import h5_windows, make_settings, write_h5

pytest.importorskip("torch")  # the extractors compute with torch

BANDS = {"delta": [0.5, 4.0], "theta": [4.0, 8.0], "alpha": [8.0, 13.0], "beta": [13.0, 30.0],
         "gamma": [30.0, 45.0]}


def direct_band_power(windows: np.ndarray, bands: dict, sfreq: float) -> np.ndarray:
    """The periodogram band power, in float64 numpy, straight from the definition."""
    x = windows.astype(np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2 / n**2
    power[..., 1:] *= 2
    if n % 2 == 0:
        power[..., -1] /= 2
    freqs = np.arange(power.shape[-1]) * sfreq / n
    return np.stack([power[..., (freqs >= lo) & (freqs < hi)].sum(axis=-1)
                     for lo, hi in bands.values()], axis=-1)


def test_band_power_is_the_variance_split_by_band():
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((4, 3, 200)).astype(np.float32)
    config = load_feature_config(Settings(extra={"features": {"bands": {"all": [0, 1000]}}}))
    (ex,) = extractors_for(config, {"sfreq": 100.0})
    (values,) = compute([ex], windows).values()
    np.testing.assert_allclose(values[..., 0], windows.astype(np.float64).var(axis=-1),
                               rtol=1e-4)


def test_warmed_features_equal_a_direct_computation(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=30, compression="gzip")
    settings = make_settings(tmp_path, [d], prefix,
                             extractors=["band_power", "relative_band_power", "log_band_power"])
    report = hdf5_follower(settings, db, rclient).warm()
    assert report.features_written == 90
    windows = h5_windows(d / "a.h5")
    expected = direct_band_power(windows, BANDS, 100.0)
    cache = WindowCache(rclient, prefix)
    meta = cache.file(str(d / "a.h5"))
    got = np.stack(cache.get_features(meta, range(30), "band_power"))
    assert got.shape == (30, 8, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6 * expected.max())
    rel = np.stack(cache.get_features(meta, range(30), "relative_band_power"))
    np.testing.assert_allclose(rel, expected / expected.sum(-1, keepdims=True), rtol=2e-4,
                               atol=1e-6)
    log_bp = np.stack(cache.get_features(meta, range(30), "log_band_power"))
    np.testing.assert_allclose(log_bp, np.log10(expected), atol=1e-4)


def test_changing_an_extractor_recomputes_only_its_features(tmp_path, db, rclient, prefix):
    d = tmp_path / "h5"
    d.mkdir()
    write_h5(d / "a.h5", n=20)
    base = make_settings(tmp_path, [d], prefix, extractors=["band_power"])
    hdf5_follower(base, db, rclient).warm()
    cache = WindowCache(rclient, prefix)
    old_key = next(iter(cache.file(str(d / "a.h5")).features))

    bands = {"slow": [1.0, 10.0], "fast": [10.0, 40.0]}
    changed = make_settings(tmp_path, [d], prefix, extractors=["band_power"],
                            features={"bands": bands})
    report = hdf5_follower(changed, db, rclient).warm()
    assert report.windows_written == 0 and report.features_written == 20
    meta = cache.file(str(d / "a.h5"))
    (new_key,) = meta.features
    assert new_key != old_key and new_key.startswith("band_power-")
    assert list(rclient.scan_iter(match=f"{prefix}:f:*:{old_key}:*", count=1000)) == []
    assert len(list(rclient.scan_iter(match=f"{prefix}:w:*", count=1000))) == 20
    got = np.stack(cache.get_features(meta, range(20), "band_power"))
    np.testing.assert_allclose(got, direct_band_power(h5_windows(d / "a.h5"), bands, 100.0),
                               rtol=2e-4, atol=1e-6)

    # No extractor at all: the feature keys go, the windows stay.
    none = make_settings(tmp_path, [d], prefix, extractors=[])
    report = hdf5_follower(none, db, rclient).warm()
    assert report.windows_written == 0 and report.features_written == 0
    assert list(rclient.scan_iter(match=f"{prefix}:f:*", count=1000)) == []
    assert len(list(rclient.scan_iter(match=f"{prefix}:w:*", count=1000))) == 20


def test_a_file_without_sfreq_uses_the_configured_one(tmp_path):
    config = load_feature_config(Settings(extra={"features": {"sfreq": 250.0}}))
    assert extractors_for(config, {})[0].sfreq == 250.0
    assert extractors_for(config, {"sfreq": 100})[0].sfreq == 100.0
    assert extractors_for(config, {})[0].key != extractors_for(config, {"sfreq": 100})[0].key


@pytest.mark.parametrize("features,message", [
    ({"extractors": ["spectral_entropy"]}, "unknown extractor 'spectral_entropy'"),
    ({"bands": {"alpha": [13, 8]}}, "bands.alpha"),
    ({"sfreq": 0}, "sfreq"),
])
def test_bad_feature_settings_are_config_errors(features, message):
    with pytest.raises(ConfigError, match=message):
        load_feature_config(Settings(extra={"features": features}))
