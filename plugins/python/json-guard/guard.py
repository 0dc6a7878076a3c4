"""The logic of the json-guard plugin, free of any WebAssembly binding.

It is plain Python (standard library only), so it runs both inside the component
(imported by ``app.py``) and under an ordinary interpreter for the unit tests in
``test_guard.py``.

Config (the stage's ``config`` table, as JSON)::

    {
      "redact":       ["password", "ssn"],   # field names replaced at any depth
      "require":      ["user", "user.id"],   # top-level names or dotted paths
      "methods":      ["POST", "PUT", "PATCH"],
      "replacement":  "[redacted]",
      "audit-header": "x-audit"
    }

Every key is optional; unknown keys are errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

DEFAULT_METHODS = ("POST", "PUT", "PATCH")
KNOWN_KEYS = ("redact", "require", "methods", "replacement", "audit-header")

# RFC 9110 token characters, lower-case only (the gateway hands header names lower-cased).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_METHOD = re.compile(r"^[A-Z]+$")


class ConfigError(ValueError):
    """A stage config that does not fit; the message names the offending field."""


@dataclass(frozen=True)
class Settings:
    """A checked config."""

    redact: frozenset = frozenset()
    require: Tuple[Tuple[str, ...], ...] = ()
    methods: frozenset = frozenset(DEFAULT_METHODS)
    replacement: str = "[redacted]"
    audit_header: str = "x-audit"


def _string_list(config: dict, key: str) -> List[str]:
    value = config.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"`{key}` must be a list of strings, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"`{key}[{i}]` must be a string, got {_kind(item)}")
        if not item:
            raise ConfigError(f"`{key}[{i}]` must not be empty")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a table"


def parse_config(text: str) -> Settings:
    """Checks the stage config (a JSON document) and returns the settings.

    Raises ``ConfigError`` with a message that names the field at fault.
    """
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as error:
        raise ConfigError(f"config is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a table, got {_kind(config)}")
    unknown = sorted(set(config) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown field `{unknown[0]}` (known fields: {', '.join(KNOWN_KEYS)})"
        )
    redact = _string_list(config, "redact")
    require = []
    for i, path in enumerate(_string_list(config, "require")):
        parts = tuple(path.split("."))
        if any(not part for part in parts):
            raise ConfigError(f"`require[{i}]` = {path!r} has an empty segment")
        require.append(parts)
    methods = _string_list(config, "methods") if "methods" in config else list(DEFAULT_METHODS)
    for i, method in enumerate(methods):
        if not _METHOD.match(method):
            raise ConfigError(f"`methods[{i}]` = {method!r} is not an upper-case HTTP method")
    replacement = config.get("replacement", "[redacted]")
    if not isinstance(replacement, str):
        raise ConfigError(f"`replacement` must be a string, got {_kind(replacement)}")
    header = config.get("audit-header", "x-audit")
    if not isinstance(header, str) or not _TOKEN.match(header):
        raise ConfigError(
            f"`audit-header` must be a lower-case HTTP header name, got {header!r}"
        )
    if not redact and not require:
        raise ConfigError("nothing to do: set `redact`, `require` or both")
    return Settings(
        redact=frozenset(name.lower() for name in redact),
        require=tuple(require),
        methods=frozenset(methods),
        replacement=replacement,
        audit_header=header,
    )


@dataclass
class Verdict:
    """What to do with one request.

    ``status`` is 0 when the request goes on; then ``body`` is the rewritten body
    (``None``: unchanged) and ``redacted`` lists the paths that were replaced.
    Otherwise the request is refused with ``status`` and the JSON ``error`` document.
    """

    status: int = 0
    error: Optional[dict] = None
    body: Optional[bytes] = None
    redacted: List[str] = field(default_factory=list)


def _is_json(content_type: Optional[str]) -> bool:
    if content_type is None:
        return True
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json")


def _redact(value: Any, settings: Settings, path: str, found: List[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            here = f"{path}.{key}" if path else key
            if key.lower() in settings.redact:
                found.append(here)
                out[key] = settings.replacement
            else:
                out[key] = _redact(item, settings, here, found)
        return out
    if isinstance(value, list):
        return [_redact(item, settings, f"{path}[{i}]", found) for i, item in enumerate(value)]
    return value


def _missing(document: Any, settings: Settings) -> List[str]:
    missing = []
    for parts in settings.require:
        node = document
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if node is None:
            missing.append(".".join(parts))
    return missing


def _refuse(status: int, code: str, message: str, **extra: Any) -> Verdict:
    error = {"error": code, "message": message}
    error.update(extra)
    return Verdict(status=status, error=error)


def inspect(settings: Settings, method: str, content_type: Optional[str], body: Optional[bytes]) -> Verdict:
    """Checks and rewrites one request body."""
    if method not in settings.methods or body is None:
        return Verdict()
    if not body.strip():
        missing = [".".join(parts) for parts in settings.require]
        if missing:
            return _refuse(
                400, "missing_fields", f"required fields missing: {', '.join(missing)}", missing=missing
            )
        return Verdict()
    if not _is_json(content_type):
        return _refuse(
            415, "unsupported_media_type", f"expected a JSON body, got content-type {content_type!r}"
        )
    try:
        document = json.loads(body)
    except ValueError as error:
        return _refuse(400, "invalid_json", f"the body is not valid JSON: {error}")
    if settings.require and not isinstance(document, dict):
        return _refuse(400, "invalid_json", "the body must be a JSON object")
    missing = _missing(document, settings)
    if missing:
        return _refuse(
            400, "missing_fields", f"required fields missing: {', '.join(missing)}", missing=missing
        )
    found: List[str] = []
    rewritten = _redact(document, settings, "", found)
    if not found:
        return Verdict()
    text = json.dumps(rewritten, ensure_ascii=False, separators=(",", ":"))
    return Verdict(body=text.encode("utf-8"), redacted=found)
