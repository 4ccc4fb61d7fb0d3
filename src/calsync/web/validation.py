"""Check request data against the OpenAPI document's own schemas (a JSON Schema subset).

The API validates with the schemas it publishes, so a request the document
calls invalid is refused with a 4xx, and one it calls valid reaches the Engine.
Supported keywords: type, enum, the bounds of numbers and strings (minimum,
maximum, exclusiveMinimum, minLength, maxLength, pattern), array items and
sizes, object properties, required and additionalProperties; ``format`` is
left to the Engine, which checks URLs, zones and durations itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["problem_in", "query_values"]

_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def _is(value: object, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "number" and isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _TYPES[name])


def problem_in(value: object, schema: Mapping[str, Any], where: str) -> str | None:
    """Say why *value* does not fit *schema*, naming ``where``; None if it fits."""
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, name) for name in names):
            return f"{where} must be {' or '.join(names)}"
    if "enum" in schema and value not in schema["enum"]:
        shown = ", ".join(str(option) for option in schema["enum"])
        return f"{where} must be one of: {shown}"
    if isinstance(value, str):
        return _string_problem(value, schema, where)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number_problem(value, schema, where)
    if isinstance(value, list):
        return _array_problem(value, schema, where)
    if isinstance(value, dict):
        return _object_problem(value, schema, where)
    return None


def _string_problem(value: str, schema: Mapping[str, Any], where: str) -> str | None:
    if len(value) < schema.get("minLength", 0):
        return f"{where} must be at least {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{where} must be at most {schema['maxLength']} characters"
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        return f"{where} must match {schema['pattern']}"
    return None


def _number_problem(value: float, schema: Mapping[str, Any], where: str) -> str | None:
    if "minimum" in schema and value < schema["minimum"]:
        return f"{where} must be >= {schema['minimum']}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return f"{where} must be > {schema['exclusiveMinimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{where} must be <= {schema['maximum']}"
    return None


def _array_problem(
    value: list[Any], schema: Mapping[str, Any], where: str
) -> str | None:
    if len(value) < schema.get("minItems", 0):
        return f"{where} must have at least {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{where} must have at most {schema['maxItems']} items"
    items = schema.get("items")
    if items is None:
        return None
    for index, item in enumerate(value):
        problem = problem_in(item, items, f"{where}[{index}]")
        if problem is not None:
            return problem
    return None


def _object_problem(
    value: dict[str, Any], schema: Mapping[str, Any], where: str
) -> str | None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            return f"{where}.{name} is required"
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(value) - set(properties))
        if unknown:
            known = ", ".join(sorted(properties))
            return f"{where} has unknown field {unknown[0]!r}; known: {known}"
    for name, item in value.items():
        if name in properties:
            problem = problem_in(item, properties[name], f"{where}.{name}")
            if problem is not None:
                return problem
    return None


def _coerced(text: str, schema: Mapping[str, Any]) -> object:
    """Return a query parameter's text as its schema's type; else the text."""
    kind = schema.get("type")
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


def query_values(
    query: Mapping[str, str], parameters: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], str | None]:
    """Read an operation's query parameters: their values, and the first problem."""
    values: dict[str, Any] = {}
    for parameter in parameters:
        if parameter["in"] != "query":
            continue
        name, schema = parameter["name"], parameter["schema"]
        if name not in query:
            if parameter.get("required"):
                return values, f"query parameter {name!r} is required"
            if "default" in schema:
                values[name] = schema["default"]
            continue
        value = _coerced(query[name], schema)
        problem = problem_in(value, schema, f"query parameter {name!r}")
        if problem is not None:
            return values, problem
        values[name] = value
    return values, None
