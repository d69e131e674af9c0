"""Where the client finds the controller URL, its token and the CA bundle.

Each key is resolved on its own: the environment variable wins, else the TOML file.
The file is ``$JOBQUEUE_CLIENT_CONFIG`` when set (and must then exist), else
``$XDG_CONFIG_HOME/jobqueue/client.toml`` (``~/.config/jobqueue/client.toml``) when present.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobqueue.client.errors import ConfigError

CONFIG_ENV = "JOBQUEUE_CLIENT_CONFIG"
ENV_KEYS = {"url": "JOBQUEUE_URL", "token": "JOBQUEUE_TOKEN", "ca_bundle": "JOBQUEUE_CA_BUNDLE"}


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None = None
    ca_bundle: str | None = None
    source: str = "environment"  # where the settings came from, for error messages


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "jobqueue" / "client.toml"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from its first byte on (it holds a token)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


def write_config(path: Path, url: str, token: str, ca_bundle: str | None = None) -> None:
    """A client file (only its owner can read it) that `load_config` reads back."""
    values = {"url": url, "token": token} | ({"ca_bundle": ca_bundle} if ca_bundle else {})
    write_private(path, "".join(f"{key} = {_toml_string(value)}\n"
                                for key, value in values.items()))


def _toml_string(value: str) -> str:
    """`value` as a TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c
        for c in value)
    return f'"{escaped}"'


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The client file in use: $JOBQUEUE_CLIENT_CONFIG, else the default one."""
    env = os.environ if env is None else env
    explicit = env.get(CONFIG_ENV, "").strip()
    return Path(explicit).expanduser() if explicit else default_config_path(env)


def load_config(env: Mapping[str, str] | None = None) -> ClientConfig:
    """Resolve the client settings from ``env`` (default ``os.environ``) and the TOML file."""
    env = os.environ if env is None else env
    explicit = env.get(CONFIG_ENV, "").strip()
    path = config_path(env)
    from_file: dict[str, object] = {}
    if explicit and not path.is_file():
        raise ConfigError(f"{CONFIG_ENV} points to {path}, which is not a file")
    if path.is_file():
        from_file = _read_toml(path)

    values: dict[str, str | None] = {}
    for key, env_name in ENV_KEYS.items():
        env_value = env.get(env_name, "").strip()
        if env_value:
            values[key] = env_value
            continue
        file_value = from_file.get(key)
        if file_value is None or file_value == "":
            values[key] = None
        elif not isinstance(file_value, str):
            raise ConfigError(f"{path}: '{key}' must be a string")
        elif key == "ca_bundle":
            # A relative CA path in the file means relative to the file, not to the cwd.
            values[key] = str(path.parent / Path(file_value).expanduser())
        else:
            values[key] = file_value.strip()

    if not values["url"]:
        raise ConfigError(
            f"no controller URL: set {ENV_KEYS['url']} or 'url' in {path} "
            f"(or point {CONFIG_ENV} at a config file)"
        )
    if values["ca_bundle"] and not os.path.isfile(values["ca_bundle"]):
        raise ConfigError(f"CA bundle {values['ca_bundle']} does not exist")
    source = str(path) if from_file else "environment"
    return ClientConfig(
        url=values["url"], token=values["token"], ca_bundle=values["ca_bundle"], source=source
    )


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(ENV_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
    return data
