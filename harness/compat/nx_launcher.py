"""Start nx-27017 (a MongoDB wire-protocol server on SQLite) for chatbench.

nx-27017 0.8.1 encodes two reply fields with types the Rust MongoDB driver
rejects: non-zero cursor ids as int32 (the driver wants int64) and change
events' `clusterTime` as a datetime (the driver wants a BSON Timestamp).
This launcher wraps the reply encoder to re-type exactly those two fields.

It also gives change-stream `getMore` MongoDB's await semantics: nx-27017
answers at once with an empty batch (ignoring `maxAwaitTimeMS`), so every
watching node's driver re-issued `getMore` in a hot loop that kept the
compat server's one core busy and starved every other command. Here a
change-stream `getMore` that comes back empty is asked again every POLL_S,
for up to AWAIT_S, before the empty answer goes out. The pause happens
between two complete commands (nothing of nx-27017's is held meanwhile) on
the worker thread nx-27017 runs the command on, so it delays only that
`getMore`. Then it runs nx-27017's own command line unchanged.
"""

import datetime
import sys
import time

from bson.int64 import Int64
from bson.timestamp import Timestamp

import nx_27017.handler as handler
import nx_27017.wire_protocol as wire_protocol
from nx_27017.nx_27017 import main

AWAIT_S = 0.25
POLL_S = 0.005

_convert = wire_protocol._convert_objectids
_inc = 0


def _next_inc():
    global _inc
    _inc = (_inc + 1) % 0x7FFFFFFF
    return _inc


def _retype(value):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "cursor" and isinstance(item, dict) and isinstance(item.get("id"), int):
                item = dict(item)
                item["id"] = Int64(item["id"])
            elif key == "clusterTime" and isinstance(item, datetime.datetime):
                item = Timestamp(item, _next_inc())
                out[key] = item
                continue
            out[key] = _retype(item)
        return out
    if isinstance(value, list):
        return [_retype(item) for item in value]
    return value


def _convert_for_rust(document):
    return _retype(_convert(document))


wire_protocol._convert_objectids = _convert_for_rust

_handle_command = handler.NeoSQLiteHandler.handle_command


def _is_change_stream_get_more(handler_self, msg):
    for section_type, doc in msg.get("sections", []):
        if section_type == "body" and isinstance(doc, dict) and "getMore" in doc:
            try:
                return handler_self._change_stream_manager.get_stream(int(doc["getMore"])) is not None
            except (TypeError, ValueError):
                return False
    return False


def _handle_command_awaiting(self, msg):
    request_id, reply = _handle_command(self, msg)
    if not _is_change_stream_get_more(self, msg):
        return request_id, reply
    deadline = time.monotonic() + AWAIT_S
    while not reply.get("cursor", {}).get("nextBatch") and time.monotonic() < deadline:
        time.sleep(POLL_S)
        request_id, reply = _handle_command(self, msg)
    return request_id, reply


handler.NeoSQLiteHandler.handle_command = _handle_command_awaiting


if __name__ == "__main__":
    sys.argv[0] = "nx_27017"
    sys.exit(main())
