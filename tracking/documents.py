"""Turning user values into safe MongoDB documents: BSON-ready types, no secrets.

* :func:`to_document` converts NumPy/torch scalars, paths, tuples and sets into plain BSON
  types and rejects keys MongoDB queries cannot address (containing ``.`` or starting with
  ``$``), naming the offending key path.
* :func:`redact` replaces the values of credential-like keys (password, secret, token, api_key,
  ...) and the passwords inside URIs with ``"***"`` before anything is stored or logged.
* :func:`clean_metrics` validates a ``{name: number}`` mapping.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from bson import ObjectId

from services.connections import mask_uri

REDACTED = "***"

# Key names whose values are credentials, compared word by word ("db_password", "hfToken",
# "OPENAI_API_KEY" are secrets; "max_tokens", "tokenizer", "bypass" are not).
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "apikey",
        "credential",
        "credentials",
        "privatekey",
    }
)
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("auth", "key"),
        ("client", "secret"),
        ("session", "key"),
    }
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# token=..., password=..., key=... in query strings and free text ("password: hunter2").
_INLINE_SECRET = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key)"
    r"\s*[=:]\s*)(?P<val>[^\s&,;'\"]+)",
    re.IGNORECASE,
)

_MAX_DEPTH = 32


def is_secret_key(key: str) -> bool:
    """True for key names that hold credentials (``password``, ``api_key``, ``hf_token``...)."""
    words = [w.lower() for w in _WORD.findall(key)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def redact_text(text: str) -> str:
    """``text`` with URI passwords and ``password=...``-style values replaced by ``***``."""
    text = mask_uri(text)
    return _INLINE_SECRET.sub(lambda m: m.group("head") + REDACTED, text)


def _holds_secret(key: object, value: Any) -> bool:
    # Numbers and flags under a secret-looking key ("n_pass": 3) are not credentials.
    if not isinstance(key, str) or not is_secret_key(key):
        return False
    return isinstance(value, str | bytes | Mapping | list | tuple) and len(value) > 0


def redact(value: Any) -> Any:
    """A copy of ``value`` with credential-like keys and URI passwords replaced by ``***``."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _holds_secret(k, v) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _scalar(value: Any) -> Any:
    """Python scalar for NumPy / torch scalars (anything with ``.item()`` and no length)."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return item()
    return value


def _field_name(key: Any, path: str) -> str:
    """``key`` as a MongoDB field name (NumPy keys become text); ValueError when unusable."""
    if not isinstance(key, str):
        key = str(_scalar(key))
    if "." in key or key.startswith("$") or key == "":
        raise ValueError(
            f"{path}: key {key!r} cannot be stored: MongoDB field names must be non-empty, "
            "must not contain '.' or start with '$'; rename it (e.g. "
            f"{key.replace('.', '_').lstrip('$') or 'value'!r}) or nest it as a dict"
        )
    return key


def to_document(value: Any, path: str = "document", _depth: int = 0) -> Any:
    """``value`` converted to BSON-ready Python types.

    Mappings become dicts with string keys, tuples/lists become lists, sets become sorted lists,
    paths become strings and NumPy/torch scalars become Python numbers. ``None``, bool, int,
    float, str, bytes, datetimes and ObjectIds pass through.

    Raises
    ------
    ValueError
        For keys containing ``.`` or starting with ``$`` (MongoDB cannot query them), or values
        nested more than 32 levels deep.
    TypeError
        For values of any other type (arrays, tensors, arbitrary objects), naming the key path.
    """
    if _depth > _MAX_DEPTH:
        raise ValueError(f"{path}: nested more than {_MAX_DEPTH} levels; flatten the structure")
    value = _scalar(value)
    if value is None or isinstance(value, bool | int | float | str | bytes | ObjectId):
        return value
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {
            key: to_document(item, f"{path}.{key}", _depth + 1)
            for key, item in ((_field_name(k, path), v) for k, v in value.items())
        }
    if isinstance(value, list | tuple):
        return [to_document(v, f"{path}[{i}]", _depth + 1) for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        return sorted((to_document(v, f"{path}[]", _depth + 1) for v in value), key=repr)
    raise TypeError(
        f"{path}: cannot store a {type(value).__module__}.{type(value).__name__} in MongoDB; "
        "convert it to a number, string, list or dict first (arrays: .tolist())"
    )


def clean_metrics(metrics: Mapping[str, Any], what: str = "metrics") -> dict[str, float]:
    """``metrics`` as ``{name: float}``; NaN and infinities are kept (a diverging loss is data).

    Raises
    ------
    TypeError
        When ``metrics`` is not a mapping or a value is not a real number.
    ValueError
        When a name is empty, contains ``.`` or starts with ``$``.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{what} must be a dict of name -> number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            raise ValueError(
                f"{what}: metric name {name!r} is not allowed: use a non-empty string without '.' "
                "and not starting with '$' (e.g. 'val_loss' or 'val/loss')"
            )
        value = _scalar(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"{what}[{name!r}] must be a real number, got {type(value).__name__} {value!r}; "
                "pass float(tensor) or tensor.item()"
            )
        out[name] = float(value)
    return out
