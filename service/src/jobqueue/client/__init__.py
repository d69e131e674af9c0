"""Python client and ``jobqueue`` command line for the job service."""

from jobqueue.client.api import TERMINAL_STATES, Client
from jobqueue.client.errors import (
    ApiError,
    ClientError,
    ConfigError,
    TransportError,
    UnsafeArchiveError,
    WaitTimeout,
)

__all__ = [
    "TERMINAL_STATES",
    "ApiError",
    "Client",
    "ClientError",
    "ConfigError",
    "TransportError",
    "UnsafeArchiveError",
    "WaitTimeout",
]
