"""The HDF5 window caches: one document per file in `hdf5_files`, filled by the HDF5
indexer (`syncd warm` / `syncd run`), not by table replay.

A document holds the file's path, size, mtime and inode, a content fingerprint
(a SHA-256 tree hash of its bytes), each dataset's shape, dtype, chunks and compression, the
file attributes as JSON-safe values (release, sfreq, ...), the number of windows,
the generation (bumped whenever the content changes) and the state: indexed,
warming, warm or quarantined (with the error).
"""

VERSION = 3
DESCRIPTION = "HDF5 caches: hdf5_files, one document per file"


def upgrade(model):
    model.declare_collection("hdf5_files", owner="hdf5")
    model.create_index("hdf5_files", [("source_id", 1), ("path", 1)])
    model.create_index("hdf5_files", [("state", 1)])
    model.create_index("hdf5_files", [("mtime_ns", -1)])
