"""Indexes for the queries syncd itself makes, nothing else changes in the documents.

- `experiments` `{metrics.best_val_loss: 1, run_id: 1}`: the server's path of the
  dashboard's experiments list (`Tracker.best_first`) pages the runs with a loss in
  that order, skipped and limited by the server; 0002 has the loss only behind
  `challenge`. The filtered pages find their runs by 0002's `{challenge: 1, ...}` and
  `{status: 1}` and by `{_source: 1, _id: 1}` (every mirrored collection has it); the
  runs without a loss come by 0002's `{run_id: 1}`. The dashboard takes that path only
  until its own order of the runs is read (syncd.client.ranking_feed: one pass, then
  the change stream; a page is then fetched by `_id`), where it cannot keep one (no
  change streams, a value it does not order) or with `[http] experiments_order =
  "server"`; `syncd experiments best` orders in process too. The index stays for that
  path (and for users' own queries); what it holds is unchanged.
- `hdf5_files` `{host: 1, path: 1}`: a file's document is found by its host and path
  (syncd.hdf5.files), which 0003's `{source_id: 1, path: 1}` does not serve.
"""

VERSION = 4
DESCRIPTION = "indexes: experiments by best validation loss, hdf5_files by host and path"


def upgrade(model):
    model.create_index("experiments", [("metrics.best_val_loss", 1), ("run_id", 1)])
    model.create_index("hdf5_files", [("host", 1), ("path", 1)])
