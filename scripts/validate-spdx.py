#!/usr/bin/env python3
"""Validate an SPDX 3.0.1 JSON-LD document against the official SPDX 3.0.1 JSON Schema, offline.

Schema: https://spdx.org/schema/3.0.1/spdx-json-schema.json, which redirects to
  https://spdx.github.io/spdx-spec/v3.0.1/rdf/schema.json
  = git spdx/spdx-spec, branch gh-pages, commit 954412d7328bdab4dbdc52cb201a66f0195ebbc8,
    path v3.0.1/rdf/schema.json (blob 5a030b48fd7f957ef55b1321c069436940786852),
  sha256 59f59713c7d73ff0d833f4f468df974a689fc9dd36dc5510f1875ff85d276c54
  (byte-identical to `shacl2code==0.0.20 generate` from the same commit's spdx-model.ttl,
   jsonld-annotations.ttl, spdx-context.jsonld).
JSON Schema draft 2020-12, no "$id", only internal "#/$defs/..." refs, no "format" keywords.
Needs: jsonschema==4.26.0, referencing==0.37.0.

Extra (non-schema) checks, on by default, off with --schema-only:
  * CreationInfo.specVersion == "3.0.1"
  * ai_AIPackage has the properties the 3.0.1 spec lists as minCount 1 for AIPackage
    ("External properties cardinality updates") but which neither the JSON Schema nor the
    3.0.1 SHACL enforce: releaseTime, suppliedBy, software_downloadLocation,
    software_packageVersion, software_primaryPurpose
  * string references to "_:..." blank nodes / spdxIds resolve inside @graph (or name one of
    the individuals SPDX defines, such as Core/NoAssertionElement), spdxIds unique

usage: scripts/validate-spdx.py [--schema PATH] [--schema-only] DOC.json [...]
(default schema: docs/schemas/spdx-3.0.1-json-schema.json, checked by its sha256)
exit 0 = all valid, 1 = some invalid, 2 = setup error.
"""
import argparse
import hashlib
import json
import pathlib
import sys

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

SCHEMA_SHA256 = "59f59713c7d73ff0d833f4f468df974a689fc9dd36dc5510f1875ff85d276c54"
SCHEMA_URI = "https://spdx.org/schema/3.0.1/spdx-json-schema.json"
AI_PACKAGE_SPEC_REQUIRED = ("releaseTime", "suppliedBy", "software_downloadLocation",
                            "software_packageVersion", "software_primaryPurpose")
# Individuals the SPDX 3.0.1 model defines, which may stand where an Element is referenced
# (e.g. `suppliedBy` when the supplier is not known).
SPDX_INDIVIDUALS = {
    "https://spdx.org/rdf/3.0.1/terms/Core/NoAssertionElement",
    "https://spdx.org/rdf/3.0.1/terms/Core/NoneElement",
    "https://spdx.org/rdf/3.0.1/terms/Core/SpdxOrganization",
}
REF_KEYS = ("creationInfo", "createdBy", "createdUsing", "suppliedBy", "originatedBy",
            "rootElement", "element", "from", "to")


def build_validator(schema_path: pathlib.Path):
    raw = schema_path.read_bytes()
    got = hashlib.sha256(raw).hexdigest()
    if got != SCHEMA_SHA256:
        raise ValueError(f"sha256 mismatch for {schema_path}: {got} != {SCHEMA_SHA256}")
    schema = json.loads(raw)
    jsonschema.Draft202012Validator.check_schema(schema)
    # The schema has no $id; register it under its public URL so the base URI is stable.
    # A Registry without `retrieve` never touches the network (unknown refs -> Unresolvable).
    resource = referencing.Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = referencing.Registry().with_resource(SCHEMA_URI, resource)
    return jsonschema.Draft202012Validator(
        {"$ref": SCHEMA_URI}, registry=registry)


def extra_checks(doc):
    errs = []
    graph = doc.get("@graph") if isinstance(doc, dict) else None
    if not isinstance(graph, list):
        return errs
    ids = {}
    for i, o in enumerate(graph):
        if not isinstance(o, dict):
            continue
        k = o.get("spdxId") or o.get("@id")
        if k:
            if k in ids:
                errs.append(f"$['@graph'][{i}]: duplicate id {k!r}")
            ids[k] = o
    for i, o in enumerate(graph):
        if not isinstance(o, dict):
            continue
        t = o.get("type")
        if t == "CreationInfo" and o.get("specVersion") != "3.0.1":
            errs.append(f"$['@graph'][{i}].specVersion: expected '3.0.1', got {o.get('specVersion')!r}")
        if t == "ai_AIPackage":
            for p in AI_PACKAGE_SPEC_REQUIRED:
                if p not in o:
                    errs.append(f"$['@graph'][{i}]: ai_AIPackage missing spec-mandatory {p!r}")
        for key in REF_KEYS:
            vals = o.get(key)
            for v in (vals if isinstance(vals, list) else [vals]):
                if isinstance(v, str) and v not in ids and v.startswith("_:"):
                    errs.append(f"$['@graph'][{i}].{key}: blank node {v!r} not defined in @graph")
                if isinstance(v, str) and v not in ids and v not in SPDX_INDIVIDUALS \
                        and key in ("creationInfo", "createdBy", "suppliedBy"):
                    if not v.startswith("_:"):
                        errs.append(f"$['@graph'][{i}].{key}: {v!r} not defined in @graph")
    return errs


def _noise(e):
    # alternatives of the class-discriminating anyOf/oneOf: "type: 'X' was expected",
    # "<object> is not of type 'string'" (the BlankNodeOrIRI branch of *_derived)
    if e.validator == "const" and e.path and e.path[-1] == "type":
        return True
    if e.validator == "type" and isinstance(e.instance, dict) and e.validator_value == "string":
        return True
    return False


def explain(validator, doc):
    """The schema is anyOf/oneOf over all classes, so raw errors are vague. Re-validate each
    failing @graph item against $defs/<its type> and report the deepest non-noise leaves."""
    out = []
    graph = doc.get("@graph") if isinstance(doc, dict) else None
    for e in validator.iter_errors(doc):
        if e.validator == "const" and list(e.path) == ["@context"]:
            out.append(f"{e.json_path}: {e.message}")
    if isinstance(graph, list):
        for i, item in enumerate(graph):
            t = item.get("type") if isinstance(item, dict) else None
            sub = {"$ref": f"{SCHEMA_URI}#/$defs/{t}", "unevaluatedProperties": False} if t else \
                  {"$ref": f"{SCHEMA_URI}#/$defs/AnyClass"}
            try:
                errs = list(validator.evolve(schema=sub).iter_errors(item))
            except Exception as ex:  # unknown type -> unresolvable $defs entry
                out.append(f"$['@graph'][{i}].type: unknown class {t!r} ({type(ex).__name__})")
                continue
            leaves = [lf for err in errs for lf in _leaves(err) if not _noise(lf)]
            if not leaves and errs:
                leaves = errs
            if not leaves:
                continue
            depth = max(len(lf.absolute_path) for lf in leaves)
            for lf in leaves:
                if len(lf.absolute_path) == depth:
                    m = f"$['@graph'][{i}]{lf.json_path[1:]}: {lf.message[:300]}"
                    if m not in out:
                        out.append(m)
    return out or ["document does not match the schema (no detail available)"]


def _leaves(err):
    if not err.context:
        return [err]
    return [lf for c in err.context for lf in _leaves(c)]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema", type=pathlib.Path,
                    default=pathlib.Path(__file__).parent.parent / "docs" / "schemas" / "spdx-3.0.1-json-schema.json")
    ap.add_argument("--schema-only", action="store_true")
    ap.add_argument("docs", nargs="+", type=pathlib.Path)
    a = ap.parse_args(argv)
    try:
        validator = build_validator(a.schema)
    except (OSError, ValueError) as e:
        print(f"setup error: {e}", file=sys.stderr)
        return 2
    bad = 0
    for p in a.docs:
        doc = json.loads(p.read_text(encoding="utf-8"))
        errors = []
        if not validator.is_valid(doc):
            errors = explain(validator, doc)
        if not a.schema_only:
            errors += extra_checks(doc)
        if errors:
            bad += 1
            print(f"INVALID {p}")
            for m in errors[:20]:
                print(f"  {m}")
        else:
            print(f"VALID {p}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
