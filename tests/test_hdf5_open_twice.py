"""A file this process already has open with h5py's defaults (the legacy Dataset, a
notebook) can still be indexed, warmed and read by syncd in the same process."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from syncd.api.hdf5 import hdf5_follower  # noqa: E402
from syncd.client.dataset import CachedWindowDataset  # noqa: E402
from tests.hdf5_support import make_settings, write_h5  # noqa: E402


def test_a_file_open_with_h5py_defaults_is_warmed_and_read(tmp_path, db, rclient, redis_url,
                                                           prefix):
    d = tmp_path / "h5"
    d.mkdir()
    windows, labels = write_h5(d / "a.h5", n=12, compression="gzip")
    legacy = h5py.File(d / "a.h5", "r")  # the legacy HDF5Dataset's handle, h5py's defaults
    try:
        files_only = CachedWindowDataset([d / "a.h5"], state_dir=tmp_path / "none", local_bytes=0)
        eeg, label = files_only[3]
        np.testing.assert_array_equal(eeg.numpy(), windows[3])
        assert label.item() == np.float32(labels[3])
        files_only.close()

        report = hdf5_follower(make_settings(tmp_path, [d], prefix), db, rclient).warm()
        assert report.quarantined == [] and report.pending == []
        assert report.windows_cached == 12

        cached = CachedWindowDataset([d / "a.h5"], redis_url=redis_url, prefix=prefix,
                                     local_bytes=0)
        items = cached.__getitems__(list(range(12)))
        np.testing.assert_array_equal(np.stack([e.numpy() for e, _ in items]), windows)
        assert cached.cache_counts() == {"hits": 12, "misses": 0, "bad": 0}
        cached.close()
        assert legacy["eeg"].shape == (12, 8, 100)  # the user's handle is untouched
    finally:
        legacy.close()
