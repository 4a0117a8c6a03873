"""Sinks: where projected documents go. One interface (`Sink`), backends beside it."""

from syncd.sinks.base import Rejected, Sink
from syncd.sinks.mongo import MongoSink
from syncd.sinks.null import NullSink

__all__ = ["MongoSink", "NullSink", "Rejected", "Sink"]
