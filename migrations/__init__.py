"""syncd's bundled migrations: the document model, version by version.

Each `NNNN_*.py` file here is loaded by path (see syncd.engine.migration_files); point
`--migrations` at a folder of your own to describe another legacy schema.
"""
