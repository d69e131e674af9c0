"""The web page's single sign-on, behind Apache's mod_auth_openidc.

Apache guards `/sso/login`: it sends the browser to the lab's OpenID provider and lets
the request through only once the provider has said who it is, with that identity (the
claim the role names) in REMOTE_USER. mod_wsgi passes REMOTE_USER from Apache alone: a
client's headers cannot set it. This view turns the identity into a web session as the
token sign-in does (jobqueue.controller.web_session): a token of its own that expires
after `single_sign_on_hours`, in the same HttpOnly cookie, then back to the page.
Signing out revokes that token.
"""

from __future__ import annotations

import re

from flask import Blueprint, g, redirect, request

from jobqueue.controller.errors import ApiError
from jobqueue.controller.tokens import get_or_create_user, issue_token, user_named
from jobqueue.controller.views import app_state
from jobqueue.controller.web_session import SINGLE_SIGN_ON_LABEL, set_session_cookies

bp = Blueprint("single_sign_on", __name__)

# What a user name may be (an identity from the provider becomes one as it is).
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@bp.get("/sso/login")
def sign_in():
    settings = app_state().settings
    identity = request.environ.get("REMOTE_USER", "")
    if not identity:
        raise ApiError(403, "forbidden", "single sign-on is on, but Apache passed no "
                                         "identity: /sso/login must be behind mod_auth_openidc")
    if not USER_NAME.fullmatch(identity):
        raise ApiError(403, "forbidden", f"the identity {identity!r} cannot be a user name "
                                         "(letters, digits, . _ @ -; at most 64)")
    session = g.db
    if settings.single_sign_on == "create":
        user, _ = get_or_create_user(session, identity, "user")
    else:
        user = user_named(session, identity)
        if user is None:
            raise ApiError(403, "forbidden", f"{identity} has no account here yet: an admin "
                                             "creates it (jobqueue-admin create-user)")
    if user.role == "worker":
        raise ApiError(403, "forbidden", f"{identity} is a worker, which cannot sign in")
    token = issue_token(session, user, SINGLE_SIGN_ON_LABEL,
                        days=settings.single_sign_on_hours / 24)
    session.commit()
    return set_session_cookies(redirect("/", 303), token)
