"""Indexes for the queries syncd itself makes, nothing else changes in the documents.

- `experiments` `{metrics.best_val_loss: 1, run_id: 1}`: the dashboard's experiments
  list (and `Tracker.best_first`) pages the runs with a loss in that order, skipped
  and limited by the server; 0002 has the loss only behind `challenge`. The filtered
  pages find their runs by 0002's `{challenge: 1, ...}` and `{status: 1}` and by
  `{_source: 1, _id: 1}` (every mirrored collection has it); the runs without a loss
  come by 0002's `{run_id: 1}`.
- `hdf5_files` `{host: 1, path: 1}`: a file's document is found by its host and path
  (syncd.hdf5.files), which 0003's `{source_id: 1, path: 1}` does not serve.
"""

VERSION = 4
DESCRIPTION = "indexes: experiments by best validation loss, hdf5_files by host and path"


def upgrade(model):
    model.create_index("experiments", [("metrics.best_val_loss", 1), ("run_id", 1)])
    model.create_index("hdf5_files", [("host", 1), ("path", 1)])
