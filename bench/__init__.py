"""syncd's benchmarks: run each from the repository root as `python -m bench.<name>`
(`--help` lists its options). bench/harness.py holds what they share."""
