"""A JSON Schema validator for the subset output-schema.json uses, standard library only.

It refuses every keyword it does not check, so the schema cannot say more
than the tests verify.  Draft 2020-12 meaning for: type, enum, const,
properties, required, additionalProperties, propertyNames, items, minimum,
pattern, anyOf and local $ref ("#/$defs/NAME"); $schema, $id, $defs, title
and description are annotations.
"""

import json
import pathlib
import re

SCHEMA_FILE = pathlib.Path(__file__).parent.parent / "check_email_roundtrip" / "output-schema.json"
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
CHECKED = {
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "items",
    "minimum",
    "pattern",
    "anyOf",
    "$ref",
}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


class SchemaError(Exception):
    """The schema uses something this validator does not check."""


def load_schema():
    return json.loads(SCHEMA_FILE.read_text())


def _equal(a, b):
    """JSON equality: 1 is not true, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def errors(instance, schema, root=None, path="$"):
    """Every way instance breaks schema, as "path: what" strings."""
    root = schema if root is None else root
    unknown = set(schema) - ANNOTATIONS - CHECKED
    if unknown:
        raise SchemaError(f"{path}: keywords not checked here: {sorted(unknown)}")
    found = []
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise SchemaError(f"{path}: only local #/$defs/ references: {ref}")
        found += errors(instance, root["$defs"][ref[len("#/$defs/") :]], root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(TYPES[name](instance) for name in types):
            return found + [f"{path}: {instance!r} is not of type {types}"]
    if "const" in schema and not _equal(instance, schema["const"]):
        found.append(f"{path}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and not any(_equal(instance, option) for option in schema["enum"]):
        found.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if "minimum" in schema and TYPES["number"](instance) and instance < schema["minimum"]:
        found.append(f"{path}: {instance!r} is below {schema['minimum']}")
    if "pattern" in schema and isinstance(instance, str) and not re.search(schema["pattern"], instance):
        found.append(f"{path}: {instance!r} does not match {schema['pattern']}")
    if "anyOf" in schema:
        if all(errors(instance, option, root, path) for option in schema["anyOf"]):
            found.append(f"{path}: {instance!r} matches none of anyOf")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in instance:
                found.append(f"{path}: {name!r} is missing")
        for name, value in instance.items():
            where = f"{path}.{name}"
            if "propertyNames" in schema:
                found += errors(name, schema["propertyNames"], root, f"{where} (name)")
            if name in properties:
                found += errors(value, properties[name], root, where)
            elif schema.get("additionalProperties") is False:
                found.append(f"{path}: {name!r} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += errors(value, schema["additionalProperties"], root, where)
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            found += errors(item, schema["items"], root, f"{path}[{index}]")
    return found


def assert_valid(document):
    problems = errors(document, load_schema())
    assert not problems, "\n".join(problems)


def json_output(run):
    """The one JSON object a --output json run printed, checked against the
    schema and against the process: one line, nothing on stderr, the exit
    code it states."""
    assert run.stderr == "", run.describe()
    assert run.stdout.endswith("\n") and run.stdout.count("\n") == 1, run.describe()
    document = json.loads(run.stdout)
    assert_valid(document)
    assert document["exit_code"] == run.returncode, run.describe()
    return document
