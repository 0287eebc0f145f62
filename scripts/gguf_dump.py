#!/usr/bin/env python3
"""Dump a GGUF file's header as JSON, read with the reference reader (gguf==0.19.0).

Used as an oracle for Frugal's own GGUF parser:

    PY=$(scripts/setup-python.sh) && "$PY" scripts/gguf_dump.py model.gguf > model.json

Output (one JSON object on stdout):
    version         GGUF format version
    alignment       data alignment in bytes (general.alignment, else the default 32)
    metadata        {key: value} in file order, without the GGUF.* pseudo-fields that
                    GGUFReader adds for the header. Scalars are JSON numbers/bools, strings
                    are strings, arrays are lists (in full). Floats are the exact values of
                    the stored float32/float64. A string that is not valid UTF-8 becomes
                    {"$bytes": "<hex>"}; a non-finite float becomes "NaN"/"Infinity"/"-Infinity".
    metadata_types  {key: GGUF value type name}, e.g. "UINT32", "STRING", "ARRAY[STRING]"
    tensors         [{name, type (GGMLQuantizationType name, e.g. "Q4_1"), shape (ne order as
                    stored, innermost first), n_elements, n_bytes, data_offset (absolute
                    offset in the file)}] in file order
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

try:
    import gguf
    from gguf import GGUFReader, GGUFValueType
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"gguf_dump.py: cannot import gguf ({e}); run it with the python that "
             "scripts/setup-python.sh prints")

HEADER_PSEUDO_FIELDS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}


def _string(part: Any) -> Any:
    raw = part.tobytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"$bytes": raw.hex()}


def _number(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    return x


def _scalar(vtype: GGUFValueType, part: Any) -> Any:
    if vtype == GGUFValueType.STRING:
        return _string(part)
    value = part.tolist()[0]
    if vtype == GGUFValueType.BOOL:
        return bool(value)
    return _number(value)


def field_value(field: Any) -> Any:
    """Convert a ReaderField to plain JSON data (also handles arrays of arrays)."""
    types = field.types
    if not types:
        return None
    main = types[0]
    if main != GGUFValueType.ARRAY:
        return _scalar(main, field.parts[-1])
    sub = types[-1]
    if len(types) > 2:
        # Nested arrays: GGUFReader keeps the parts flat; fall back to its own decoding.
        return field.contents()
    return [_scalar(sub, field.parts[i]) for i in field.data]


def type_name(field: Any) -> str:
    t = list(field.types)
    if not t:
        return "NONE"
    depth = 0
    while depth < len(t) and t[depth] == GGUFValueType.ARRAY:
        depth += 1
    inner = t[depth].name if depth < len(t) else "?"
    return "ARRAY[" * depth + inner + "]" * depth


def dump(path: str) -> dict[str, Any]:
    reader = GGUFReader(path, "r")
    version_field = reader.fields.get("GGUF.version")
    version = int(version_field.parts[-1][0]) if version_field is not None else None
    metadata: dict[str, Any] = {}
    metadata_types: dict[str, str] = {}
    for name, field in reader.fields.items():
        if name in HEADER_PSEUDO_FIELDS:
            continue
        metadata[name] = field_value(field)
        metadata_types[name] = type_name(field)
    tensors = [
        {
            "name": t.name,
            "type": gguf.GGMLQuantizationType(t.tensor_type).name,
            "shape": [int(d) for d in t.shape],
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
            "data_offset": int(t.data_offset),
        }
        for t in reader.tensors
    ]
    return {
        "version": version,
        "alignment": int(reader.alignment),
        "metadata": metadata,
        "metadata_types": metadata_types,
        "tensors": tensors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf_file")
    ap.add_argument("--indent", type=int, default=None, help="pretty-print with this indent")
    args = ap.parse_args()
    try:
        out = dump(args.gguf_file)
    except (OSError, ValueError) as e:
        print(f"gguf_dump.py: cannot read {args.gguf_file}: {e}", file=sys.stderr)
        return 1
    text = json.dumps(out, ensure_ascii=False, allow_nan=False, indent=args.indent)
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
