"""JSON from clients, strictly: what json.loads lets through but no JSON parser
must (NaN, Infinity) and what it cannot survive (nesting deep enough to exhaust the
stack) are refused with a message, as any other malformed body."""

from __future__ import annotations

import json

from jobqueue.controller.errors import bad_request


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def loads(text: str | bytes, what: str) -> object:
    """`text` parsed as JSON, or a 400 that names `what` was malformed."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise bad_request(f"{what} is nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise bad_request(f"{what} is not valid JSON: {exc}") from None
