"""Generic mapping: every legacy table to a collection of the same name, all columns.

Document ids are derived from (source id, table, primary key or rowid); column
names with `.` or a leading `$` get full-width stand-ins; values keep their SQLite
storage class (see syncd.projection.values).
"""

VERSION = 1
DESCRIPTION = "generic mapping: every table to a same-named collection, all columns"


def upgrade(model):
    model.map_all_tables()
