#!/usr/bin/env python3
"""Validates Frugal's JSON reports against the published schema with `jsonschema`.

    python scripts/validate-report.py docs/report.schema.json REPORT.json...

Exit 0 when every report validates; 1 with every error (file, JSON path, message) on stderr.
The schema itself is first checked against the JSON Schema 2020-12 meta-schema.
"""
import json
import sys

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    errors = 0
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path))):
            # Under oneOf/anyOf the cause is the best match among the alternatives' errors.
            while e.context:
                e = best_match(e.context)
            where = "/".join(map(str, e.absolute_path)) or "(root)"
            print(f"{path}: {where}: {e.message[:400]}", file=sys.stderr)
            errors += 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
