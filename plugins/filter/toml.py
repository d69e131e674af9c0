"""TOML for the plays: `from_toml` reads a file's text the way the service does
(tomllib), `to_toml` writes a flat table of strings, numbers and booleans, as the
client files the deploy hands out. No regular expressions over TOML."""

import tomllib

from ansible.errors import AnsibleFilterError


def from_toml(text):
    """The table `text` holds ({} for an empty or missing file's "")."""
    try:
        return tomllib.loads(text or "")
    except tomllib.TOMLDecodeError as exc:
        raise AnsibleFilterError(f"from_toml: not TOML: {exc}") from exc


def _value(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c
            for c in value)
        return f'"{escaped}"'
    raise AnsibleFilterError(f"to_toml: {key!r} is a {type(value).__name__}, not a string, "
                             "number or boolean")


def to_toml(table):
    """`table` (a flat mapping) as TOML lines, one key each."""
    return "".join(f"{key} = {_value(key, value)}\n" for key, value in table.items())


class FilterModule:
    def filters(self):
        return {"from_toml": from_toml, "to_toml": to_toml}
