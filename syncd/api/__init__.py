"""The library under the `syncd` command: one plain function per command.

Each function takes the resolved `Settings` (syncd.config.load_settings: TOML, then
SYNCD_* environment, then flags) and plain arguments, does the work and returns
data (reports, dicts, dataclasses); it never prints. The CLI (syncd.cli) only
parses, calls these and renders; tests and new code call them directly. Errors are
those of syncd.errors: a ConfigError is a usage or configuration problem (exit 2 in
the CLI), a SyncdError a failed command (exit 1).
"""

from syncd.api.dashboard import dashboard
from syncd.api.events import events
from syncd.api.experiments import (
    Experiments,
    ExperimentsReader,
    experiments_as_of,
    experiments_best,
    experiments_compare,
    experiments_history,
    experiments_reader,
    experiments_search,
    experiments_versions,
)
from syncd.api.hdf5 import cache_stats, warm
from syncd.api.legacy import capture_install, capture_status, capture_uninstall, sample
from syncd.api.local_tier import warm_local_tier
from syncd.api.restore import restore
from syncd.api.run import run
from syncd.api.source import remove_source
from syncd.api.sync import (
    MigrateResult,
    migrate,
    reconcile,
    sources_health,
    status,
    status_health,
    verify,
)

__all__ = [
    "Experiments", "ExperimentsReader", "MigrateResult", "cache_stats", "capture_install",
    "capture_status", "capture_uninstall", "dashboard", "events", "experiments_as_of",
    "experiments_best", "experiments_compare", "experiments_history", "experiments_reader",
    "experiments_search", "experiments_versions", "migrate", "reconcile", "remove_source",
    "restore", "run", "sample", "sources_health", "status", "status_health", "verify", "warm",
    "warm_local_tier",
]
