#!/usr/bin/env python3
"""Validate a CycloneDX 1.6 JSON document against the official schema, fully offline.

Schemas: cyclonedx-python-lib==11.12.0 wheel, cyclonedx/schema/_res/
  bom-1.6.SNAPSHOT.schema.json   (== CycloneDX/specification tag 1.6.2 except $ref names)
  spdx.SNAPSHOT.schema.json
  jsf-0.82.SNAPSHOT.schema.json
Needs: jsonschema==4.26.0, referencing==0.37.0 (nothing else; no network).

usage: scripts/validate-cyclonedx.py --schema-dir DIR DOC.json [DOC.json ...]
(DIR: scripts/fetch-assets.sh cyclonedx-schemas puts them in $FRUGAL_CACHE/cyclonedx-schemas)
exit 0 = all valid, 1 = some invalid, 2 = setup error.
"""
import argparse
import datetime
import hashlib
import json
import pathlib
import re
import sys

import jsonschema
import referencing
from referencing.jsonschema import DRAFT7

# sha256 of the files as shipped in cyclonedx_python_lib-11.12.0-py3-none-any.whl
PINNED = {
    "bom-1.6.SNAPSHOT.schema.json": "83821ba49aa366ad1f1d16c34837d05edd010f036f652e310db1c77d57b37c58",
    "spdx.SNAPSHOT.schema.json": "ea6e844ee6fba1e93473d94834d0ee0996970533497935f932f73d488ffdf4a3",
    "jsf-0.82.SNAPSHOT.schema.json": "8bae002c25e723db7ee1f26afde680ae1a2b1a8f6b4b4b0fd65dc3becb090aae",
}
BASE = "http://cyclonedx.org/schema/"  # bom-1.6 "$id" is http://cyclonedx.org/schema/bom-1.6.schema.json

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _date_time(value):
    """RFC 3339 date-time (jsonschema only checks it if rfc3339-validator is installed)."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    v = value.upper().replace("Z", "+00:00")
    # fromisoformat in 3.11 accepts any fraction length; validates ranges
    datetime.datetime.fromisoformat(v)
    return True


def build_validator(schema_dir: pathlib.Path):
    contents = {}
    for name, want in PINNED.items():
        raw = (schema_dir / name).read_bytes()
        got = hashlib.sha256(raw).hexdigest()
        if got != want:
            raise SystemExit(f"sha256 mismatch for {name}: {got} != {want}")
        contents[name] = json.loads(raw)

    def res(name):
        return referencing.Resource.from_contents(contents[name], default_specification=DRAFT7)

    # bom-1.6 refs "spdx.SNAPSHOT.schema.json" and "jsf-0.82.SNAPSHOT.schema.json#/definitions/signature",
    # resolved against its $id -> BASE + name. Also register the sub-schemas' own $id
    # (BASE + "spdx.schema.json", BASE + "jsf-0.82.schema.json") so upstream, un-renamed files work too.
    registry = referencing.Registry().with_resources([
        (BASE + "bom-1.6.SNAPSHOT.schema.json", res("bom-1.6.SNAPSHOT.schema.json")),
        (BASE + "spdx.SNAPSHOT.schema.json", res("spdx.SNAPSHOT.schema.json")),
        (BASE + "spdx.schema.json", res("spdx.SNAPSHOT.schema.json")),
        (BASE + "jsf-0.82.SNAPSHOT.schema.json", res("jsf-0.82.SNAPSHOT.schema.json")),
        (BASE + "jsf-0.82.schema.json", res("jsf-0.82.SNAPSHOT.schema.json")),
    ]).crawl()
    # A Registry without `retrieve` never touches the network: unknown refs raise Unresolvable.

    fc = jsonschema.FormatChecker()  # empty-ish checker + our RFC 3339 date-time
    fc.checks("date-time", raises=ValueError)(_date_time)
    schema = contents["bom-1.6.SNAPSHOT.schema.json"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, registry=registry, format_checker=fc)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema-dir", type=pathlib.Path, required=True)
    ap.add_argument("docs", nargs="+", type=pathlib.Path)
    a = ap.parse_args(argv)
    try:
        validator = build_validator(a.schema_dir)
    except (OSError, ValueError) as e:
        print(f"setup error: {e}", file=sys.stderr)
        return 2
    bad = 0
    for p in a.docs:
        doc = json.loads(p.read_text(encoding="utf-8"))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if doc.get("specVersion") != "1.6":  # the schema itself accepts any string here
            errors.append(f"specVersion must be '1.6', got {doc.get('specVersion')!r}")
        if errors:
            bad += 1
            print(f"INVALID {p}")
            for e in errors:
                if isinstance(e, str):
                    print(f"  $: {e}")
                else:
                    print(f"  {e.json_path}: {e.message[:300]}")
        else:
            print(f"VALID {p}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
