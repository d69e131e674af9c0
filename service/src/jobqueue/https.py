"""The HTTP session the client and the worker talk to the controller with."""

from __future__ import annotations

import requests


class Session(requests.Session):
    """A requests session whose configured CA file wins over the environment.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace ``Session.verify``
    on every request, so on a machine that sets them (many do, for the system
    store) a deploy's own CA would be ignored and every call would fail TLS.
    """

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


def session(ca_bundle: str | None, user_agent: str) -> Session:
    """A session verifying against ``ca_bundle`` (a CA file), or the system CAs if empty."""
    http = Session()
    http.headers["User-Agent"] = user_agent
    if ca_bundle:
        http.verify = ca_bundle
    return http
