"""`syncd events` in text mode shows control characters from the stream escaped (an
ESC sequence cannot recolour, retitle or clear the reader's terminal, a CR/LF cannot
forge a line); JSON mode stays JSON with the values as they are."""

from __future__ import annotations

import json
import re

from syncd.sinks.events import STREAM
from tests.conftest import run_cli
from tests.hdf5_support import own_redis  # noqa: F401

RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

CHANGE = {"type": "table.upsert", "source_id": "h", "table": "training_runs",
          "collection": "experiments\x1b[2J", "operation": "upsert\r\nforged line",
          "ids": ["a\x1b]0;pwned\x07", "b\u202ec"], "version": 3,
          "time": "2025-01-01T00:00:00\x1b[31m"}
OTHER = {"type": "hdf5.cached\x1b[1m\rX", "file": "w\x9b1m.h5\n"}


def test_text_mode_escapes_control_characters(own_redis):  # noqa: F811
    client = own_redis.client()
    client.xadd(STREAM, {"event": json.dumps(CHANGE)})
    client.xadd(STREAM, {"event": json.dumps(OTHER)})
    text = run_cli("events", "--from", "0", "--count", "2", "--redis-url", own_redis.url)
    assert text.code == 0, text
    assert not RAW.search(text.out), repr(text.out)
    lines = text.out.splitlines()
    assert len(lines) == 2, lines  # the CR/LF inside a field did not make a line of its own
    # one line format for every event: odd values are quoted and escaped as JSON
    assert ('"experiments\\u001b[2J" "upsert\\r\\nforged line" 2 doc(s) '
            '"a\\u001b]0;pwned\\u0007" "b\\u202ec"') in lines[0], lines
    assert lines[0].startswith('"2025-01-01T00:00:00\\u001b[31m" '), lines
    assert '"hdf5.cached\\u001b[1m\\rX"' in lines[1], lines
    assert 'file="w\\u009b1m.h5\\n"' in lines[1], lines

    as_json = run_cli("events", "--from", "0", "--count", "2", "--json", "--redis-url",
                      own_redis.url)
    assert as_json.code == 0, as_json
    first, second = (json.loads(line) for line in as_json.out.splitlines())
    assert first["collection"] == CHANGE["collection"] and first["ids"] == CHANGE["ids"]
    assert second["type"] == OTHER["type"]
