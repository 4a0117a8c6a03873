"""What a mapping's `inverse(doc, ctx)` gets besides the document: `InverseContext`,
one helper per `RowContext` conversion (syncd.projection.context), each undoing it.

Apart from the inverter (syncd.projection.inverse) so the model, which names this
type in its `Inverse` signature, and the inverter, which uses the model's
`TableMap`, do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncd.projection.context import UTC_NAMES, Params, dump_json, to_local
from syncd.projection.values import from_bson

_MISSING = object()


class InverseContext:
    """The helpers an `inverse(doc, ctx)` gets; `orig` is the document's `_orig`."""

    def __init__(self, params: Params) -> None:
        self.zone = None if params.timezone in UTC_NAMES else ZoneInfo(params.timezone)
        self.orig: Mapping[str, Any] = {}

    def datetime(self, value: Any, name: str) -> Any:
        """The text `RowContext.datetime` made `value` from."""
        if value.__class__ is not datetime:
            return from_bson(value)
        kept = self.orig.get(name)
        if kept.__class__ is str:
            return kept
        back = to_local(value, self.zone)
        if kept.__class__ is int:
            back += timedelta(microseconds=kept)
        return back.isoformat()

    def json_object(self, value: Any, name: str) -> Any:
        """The JSON text `RowContext.json_object` parsed into `value`."""
        if value.__class__ is not dict:
            return from_bson(value)
        kept = self.orig.get(name, _MISSING)
        return dump_json(value) if kept is _MISSING else kept

    def boolean(self, value: Any, name: str) -> Any:
        """The value `RowContext.boolean` made true or false."""
        if value.__class__ is not bool:
            return from_bson(value)
        kept = self.orig.get(name, _MISSING)
        return int(value) if kept is _MISSING else from_bson(kept)
