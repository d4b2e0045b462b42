"""spec.py - checking replies against the API specifications in ../shared/specs.

validate(doc, spec, schema) checks a JSON document against a schema of an
OpenAPI document (its "$ref"s inlined), with the formats uuid, date-time
(RFC 3339) and uri (absolute http/https) checked; response_schema finds the
schema a spec gives for a path, method and status. JSON Schema draft 7 for
OpenAPI 3.0 (`nullable` is not honoured, so null stays refused), draft
2020-12 for OpenAPI 3.1 (null is a type in anyOf).
"""
import datetime
import re
import urllib.parse

import jsonschema  # python3-jsonschema

FORMATS = jsonschema.FormatChecker(())
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@FORMATS.checks("uuid")
def _is_uuid(v):
    return not isinstance(v, str) or bool(_UUID.match(v))


def parse_time(v):
    """An RFC 3339 date-time as a Unix time, or None."""
    m = _DATETIME.match(v) if isinstance(v, str) else None
    if not m:
        return None
    try:
        s = v.replace("t", "T").replace("z", "Z").replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(s).timestamp()
    except ValueError:
        return None


@FORMATS.checks("date-time")
def _is_datetime(v):
    return not isinstance(v, str) or parse_time(v) is not None


@FORMATS.checks("uri")
def _is_uri(v):
    if not isinstance(v, str):
        return True
    u = urllib.parse.urlsplit(v)
    return u.scheme in ("http", "https") and bool(u.hostname) and not re.search(r"\s", v)


@FORMATS.checks("email")
def _is_email(v):
    return not isinstance(v, str) or bool(re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", v))


def inline(spec, node, depth=0):
    """node with each "$ref": "#/..." replaced by what it points to in spec."""
    if depth > 64:
        raise ValueError("$ref nesting too deep")
    if isinstance(node, dict):
        if "$ref" in node:
            target = spec
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return inline(spec, target, depth + 1)
        return {k: inline(spec, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(spec, v, depth + 1) for v in node]
    return node


def validate(doc, spec, schema):
    """Check doc against schema ({"$ref": ...} into spec, or inline). Returns "" or the errors.

    `nullable` is an unknown keyword to JSON Schema draft 7, so null stays refused; an OpenAPI 3.1
    spec is read as draft 2020-12, where null is a type.
    """
    openapi31 = isinstance(spec, dict) and str(spec.get("openapi", "")).startswith("3.1")
    draft = jsonschema.Draft202012Validator if openapi31 else jsonschema.Draft7Validator
    v = draft(inline(spec, schema), format_checker=FORMATS)
    errs = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return "; ".join("%s: %s" % ("/".join(map(str, e.absolute_path)) or "(root)", e.message) for e in errs[:8])


def response_schema(spec, path, method, code):
    """The JSON schema spec gives for path, method and status code, or None."""
    op = spec["paths"].get(path, {}).get(method.lower(), {})
    resp = op.get("responses", {}).get(str(code)) or op.get("responses", {}).get("default")
    if not resp:
        return None
    resp = inline(spec, resp)
    return ((resp.get("content") or {}).get("application/json") or {}).get("schema")
