"""Checks roomcast's OpenAPI document for tests/openapi.rs.

    openapi_check.py DOC.json [ANSWERS.json]

1. DOC must be a valid OpenAPI document (openapi-spec-validator).
2. Each recorded answer, [{"path", "method", "status", "body"}] with `path`
   the template as in DOC, must be documented for that operation, and a JSON
   body must match the schema DOC gives it (jsonschema, draft 2020-12, the
   dialect of OpenAPI 3.1).

Prints one line per problem and exits 1 if there is any.
"""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:roomcast:openapi"


def escape(token):
    return token.replace("~", "~0").replace("/", "~1")


def response_pointer(doc, path, method, status):
    """JSON pointer of the answer object documented for `status`, or None."""
    responses = doc["paths"][path][method]["responses"]
    key = str(status)
    if key not in responses:
        key = f"{str(status)[0]}XX"
        if key not in responses:
            return None
    pointer = f"/paths/{escape(path)}/{method}/responses/{key}"
    ref = responses[key].get("$ref")
    if ref is not None:
        pointer = ref[1:]
    return pointer


def resolve(doc, pointer):
    node = doc
    for token in pointer.strip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def main():
    problems = []
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    try:
        validate(doc)
    except Exception as e:  # the validator's own error types vary by version
        problems.append(f"invalid OpenAPI document: {e}")

    answers = []
    if len(sys.argv) > 2:
        with open(sys.argv[2], encoding="utf-8") as f:
            answers = json.load(f)
    registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    for a in answers:
        where = f"{a['method'].upper()} {a['path']} -> {a['status']}"
        pointer = response_pointer(doc, a["path"], a["method"], a["status"])
        if pointer is None:
            problems.append(f"{where}: status not documented")
            continue
        if a.get("body") is None:
            continue
        content = resolve(doc, pointer).get("content", {})
        if "application/json" not in content:
            problems.append(f"{where}: JSON answer, documented as {sorted(content)}")
            continue
        schema = {"$ref": f"{DOC_URI}#{pointer}/content/application~1json/schema"}
        validator = Draft202012Validator(schema, registry=registry)
        for error in validator.iter_errors(a["body"]):
            at = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where}: body at /{at}: {error.message}")

    for p in problems:
        print(p)
    print(f"openapi_check: {len(answers)} answers checked, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
