"""A user's own tokens over the API: which there are (the one in use marked), and
revoking one of them without the others (an admin: anyone's)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from jobqueue.controller.auth import current_user, require
from jobqueue.controller.errors import not_found
from jobqueue.controller.tokens import describe
from jobqueue.models import Token, utcnow

bp = Blueprint("token_api", __name__)


def token_json(token: Token) -> dict:
    return describe(token) | {"current": token is g.get("token")}


@bp.get("/tokens")
@require("user", "admin")
def list_tokens():
    user = current_user()
    return jsonify(tokens=[token_json(t) for t in sorted(user.tokens, key=lambda t: t.id)])


@bp.delete("/tokens/<int:token_id>")
@require("user", "admin")
def revoke_token(token_id: int):
    user = current_user()
    # Ids are INTEGER columns: a larger number is no token (and no database error).
    token = g.db.get(Token, token_id) if token_id < 1 << 31 else None
    if token is None or (token.user_id != user.id and user.role != "admin"):
        raise not_found(f"token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    answer = token_json(token)
    g.db.commit()
    return jsonify(answer)
