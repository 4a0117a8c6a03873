"""Small HDF5 window caches in the EEG2025 shape, for trying syncd's HDF5 side.

`syncd sample PATH --hdf5-dir DIR` writes these beside the sample metadata.db, so a
newcomer can run `syncd warm`, `syncd cache stats` and `CachedWindowDataset` without
window caches of their own. The files are the legacy project's two layouts (see
tests/hdf5_support.py and the fixture notes): challenge 1 files hold `eeg` + `labels`
(gzip level 4, with the release/n_windows/n_channels/n_timepoints/sfreq attributes),
challenge 2 files `data` + `targets`. Windows are (129 channels, 200 samples) float32
like the real caches, only far fewer of them: the contents are deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from syncd.sample import RELEASES, SampleExists

CHANNELS, TIMES, SFREQ = 129, 200, 100.0
MAX_FILES = 2 * len(RELEASES)  # one per (challenge, release), as the sample's cache_files rows


@dataclass(frozen=True)
class SampleH5:
    """One file written: what the metadata.db's `cache_files` row says about it."""

    path: Path
    challenge: int
    release: str
    n_windows: int
    size_bytes: int
    md5: str


def sample_names(files: int) -> list[tuple[int, str, str]]:
    """(challenge, release, file name) of the first `files` files: both challenges per release."""
    if not 1 <= files <= MAX_FILES:
        raise ValueError(f"files must be 1 to {MAX_FILES}, not {files}")
    pairs = [(c, r) for r in RELEASES for c in (1, 2)][:files]
    return [(c, r, f"challenge{c}_{r}_windows.h5") for c, r in pairs]


def existing(directory: Path | str, files: int) -> list[Path]:
    """The sample files that would be replaced (checked before anything is written)."""
    directory = Path(directory)
    return [directory / name for _, _, name in sample_names(files) if (directory / name).exists()]


def make_hdf5_windows(directory: Path | str, files: int = 4, windows: int = 10,
                      seed: int = 2025, force: bool = False) -> list[SampleH5]:
    """Write `files` window caches of `windows` windows each into `directory` (created).

    An existing file of the same name is refused unless `force` (it may be a real
    cache); each file is written beside its name and moved into place once complete,
    so a `syncd run` watching the directory never indexes half a file.
    """
    if windows < 1:
        raise ValueError(f"windows must be at least 1, not {windows}")
    directory = Path(directory)
    names = sample_names(files)
    if not force and (found := existing(directory, files)):
        raise SampleExists(", ".join(str(p) for p in found) + " exist" +
                           ("s" if len(found) == 1 else ""))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (challenge, release, name) in enumerate(names):
        path = directory / name
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        try:
            _write_file(tmp, challenge, release, windows, seed * 1000 + index)
            if force:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise SampleExists(f"{path} exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        data = path.read_bytes()
        written.append(SampleH5(path, challenge, release, windows, len(data),
                                hashlib.md5(data).hexdigest()))  # the legacy checksum's width
    return written


def _write_file(path: Path, challenge: int, release: str, n: int, seed: int) -> None:
    """One cache as the legacy scripts write it (EEG-like random walks, not white noise)."""
    import h5py  # the [hdf5] dependencies: only this command loads them
    import numpy as np

    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((n, CHANNELS, TIMES), dtype=np.float32), axis=2)
    eeg = (walk + 3 * rng.standard_normal((n, CHANNELS, TIMES), dtype=np.float32)).astype("f4")
    if challenge == 1:  # response times in seconds
        labels = rng.uniform(0.2, 2.0, n)
        wname, lname = "eeg", "labels"
    else:  # the p_factor the challenge-2 script regresses
        labels = rng.standard_normal(n)
        wname, lname = "data", "targets"
    with h5py.File(path, "w", track_order=False) as f:
        f.create_dataset(wname, data=eeg, chunks=(1, CHANNELS, TIMES), compression="gzip",
                         compression_opts=4)
        f.create_dataset(lname, data=labels)
        f.attrs["release"] = release
        f.attrs["n_windows"] = n
        f.attrs["n_channels"] = CHANNELS
        f.attrs["n_timepoints"] = TIMES
        f.attrs["sfreq"] = SFREQ


def cache_file_rows(written: list[SampleH5]) -> list[tuple[object, ...]]:
    """The metadata.db `cache_files` rows describing `written` (its column order, no id)."""
    return [(w.challenge, w.release, str(w.path.resolve()), round(w.size_bytes / 2**20, 2),
             w.n_windows, CHANNELS, TIMES, None, w.md5) for w in written]
