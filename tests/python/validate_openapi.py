"""Validates response bodies the gateway produced against OpenAI's OpenAPI schemas.

usage: validate_openapi.py SCHEMAS_JSON SAMPLES_JSON
SCHEMAS_JSON is tests/fixtures/openapi/schemas.json (components.schemas trimmed from
openai/openai-openapi, OpenAPI 3.1, i.e. JSON Schema 2020-12); SAMPLES_JSON is a list of
{"name", "schema", "body"} written by tests/conformance.rs. Prints every violation; exits 1 if any,
else prints ALL OK and how many bodies were checked per schema.
"""
import base64
import collections
import json
import struct
import sys

from jsonschema import Draft202012Validator



def openapi30_nullable(node):
    """The 3.1 document still says `nullable: true` (OpenAPI 3.0) in a few places, e.g. a stream
    choice's `finish_reason`; JSON Schema 2020-12 ignores that keyword, so it is spelt out here."""
    if isinstance(node, dict):
        if node.get("nullable") is True and "type" in node:
            t = node["type"]
            node["type"] = (t if isinstance(t, list) else [t]) + ["null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = node["enum"] + [None]
        for v in node.values():
            openapi30_nullable(v)
    elif isinstance(node, list):
        for v in node:
            openapi30_nullable(v)


def base64_embeddings(body):
    """`encoding_format: base64` answers carry each embedding as base64 little-endian float32, as
    OpenAI's API and SDKs do; the spec only models the float form, so each is decoded (which checks
    it is well formed) and validated as that."""
    for d in body.get("data", []):
        raw = base64.b64decode(d["embedding"], validate=True)
        assert len(raw) % 4 == 0, "base64 embedding is not whole float32s"
        d["embedding"] = list(struct.unpack("<%df" % (len(raw) // 4), raw))
    return body


schemas = json.load(open(sys.argv[1]))
openapi30_nullable(schemas)
samples = json.load(open(sys.argv[2]))
validators = {}
failures = 0
checked = collections.Counter()
for s in samples:
    name = s["schema"]
    if name not in validators:
        root = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": schemas["components"],
            "$ref": "#/components/schemas/" + name,
        }
        validators[name] = Draft202012Validator(root)
    body = base64_embeddings(s["body"]) if s.get("base64") else s["body"]
    errors = sorted(validators[name].iter_errors(body), key=lambda e: list(e.absolute_path))
    checked[name] += 1
    for e in errors:
        failures += 1
        path = "/".join(str(p) for p in e.absolute_path)
        print(f"FAIL {s['name']} ({name}) at /{path}: {e.message}")
if failures:
    print(f"{failures} violation(s)")
    sys.exit(1)
print("checked:", dict(checked))
print("ALL OK")
