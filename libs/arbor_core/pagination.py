"""Opaque, signed page tokens and page-size clamping for List RPCs (AIP-158).

A token is base64url (no padding) of a small JSON object: the position (an offset or a
keyset cursor), a short hash of the request's filter fingerprint, and an HMAC-SHA256 over
both. A client can neither forge a position nor reuse a token with a different filter or
ordering: both are INVALID_ARGUMENT on ``page_token``.

The HMAC key is ``ARBOR_PAGE_TOKEN_SECRET``; without it each process draws a random key, so
tokens then do not survive a restart and are not valid on another replica — set the secret
wherever a service runs more than one replica.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from arbor_core.errors import InvalidArgument

SECRET_ENV = "ARBOR_PAGE_TOKEN_SECRET"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_VERSION = 1
_MAX_TOKEN_CHARS = 4096
_process_key = secrets.token_bytes(32)


def _key() -> bytes:
    secret = os.environ.get(SECRET_ENV)
    return secret.encode() if secret else _process_key


def filter_fingerprint(*parts: Any) -> str:
    """A stable fingerprint of everything that shapes a listing except the page itself
    (filter, order_by, parent, show_deleted...): pass those request fields in a fixed order."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _short_hash(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def _mac(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(_key(), canonical.encode(), hashlib.sha256).hexdigest()[:32]


def encode_page_token(position: Any, filter_fingerprint: str) -> str:
    """A token for the page starting at ``position`` (an int offset or any JSON cursor)."""
    body = {"v": _VERSION, "p": position, "f": _short_hash(filter_fingerprint)}
    token = {**body, "m": _mac(body)}
    raw = json.dumps(token, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _invalid(message: str, reason: str) -> InvalidArgument:
    return InvalidArgument(message, field="page_token", reason=reason)


def decode_page_token(token: str, filter_fingerprint: str) -> Any:
    """The position a token encodes; ``None`` for an empty token (the first page).

    Raises InvalidArgument(field="page_token") with reason ``INVALID_PAGE_TOKEN`` for a token
    that is malformed or was altered, ``PAGE_TOKEN_FILTER_MISMATCH`` for a token issued for a
    different filter/order.
    """
    if not token:
        return None
    if len(token) > _MAX_TOKEN_CHARS:
        raise _invalid("page_token is too long", "INVALID_PAGE_TOKEN")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise _invalid(
            "page_token is not a token this service issued", "INVALID_PAGE_TOKEN"
        ) from exc
    if not isinstance(data, dict) or set(data) != {"v", "p", "f", "m"} or data["v"] != _VERSION:
        raise _invalid("page_token is not a token this service issued", "INVALID_PAGE_TOKEN")
    body = {"v": data["v"], "p": data["p"], "f": data["f"]}
    if not isinstance(data["m"], str) or not hmac.compare_digest(data["m"], _mac(body)):
        raise _invalid("page_token was altered or signed by another key", "INVALID_PAGE_TOKEN")
    if not hmac.compare_digest(str(data["f"]), _short_hash(filter_fingerprint)):
        raise _invalid(
            "page_token was issued for a different filter or order; start again without it",
            "PAGE_TOKEN_FILTER_MISMATCH",
        )
    return data["p"]


def decode_offset(token: str, filter_fingerprint: str) -> int:
    """Offset-based listing: 0 for the first page, else the token's non-negative offset."""
    position = decode_page_token(token, filter_fingerprint)
    if position is None:
        return 0
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise _invalid("page_token does not hold an offset", "INVALID_PAGE_TOKEN")
    return position


def clamp_page_size(
    requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """0 (unset) -> ``default``; above ``maximum`` -> ``maximum``; negative -> InvalidArgument."""
    if requested < 0:
        raise InvalidArgument(
            f"page_size must not be negative (got {requested})",
            field="page_size",
            reason="INVALID_PAGE_SIZE",
        )
    if requested == 0:
        return min(default, maximum)
    return min(requested, maximum)
