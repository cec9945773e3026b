"""Start nx-27017 (a MongoDB wire-protocol server on SQLite) for chatbench.

nx-27017 0.8.1 encodes two reply fields with types the Rust MongoDB driver
rejects: non-zero cursor ids as int32 (the driver wants int64) and change
events' `clusterTime` as a datetime (the driver wants a BSON Timestamp).
This launcher wraps the reply encoder to re-type exactly those two fields
and then runs nx-27017's own command line unchanged.
"""

import datetime
import sys

from bson.int64 import Int64
from bson.timestamp import Timestamp

import nx_27017.wire_protocol as wire_protocol
from nx_27017.nx_27017 import main

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

if __name__ == "__main__":
    sys.argv[0] = "nx_27017"
    sys.exit(main())
