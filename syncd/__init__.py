"""syncd: mirror a legacy SQLite metadata.db and HDF5 caches into MongoDB and Redis."""

__version__ = "0.1.0"
