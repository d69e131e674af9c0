"""The command line's view of your tokens: `tokens` lists them (the one in use marked),
`revoke-token ID` revokes one and leaves the others live."""

from __future__ import annotations

import argparse

from jobqueue.client import display
from jobqueue.client.api import Client


def cmd_tokens(args: argparse.Namespace) -> int:
    tokens = Client.from_env().tokens()
    if args.json:
        display.print_json(tokens)
        return 0
    rows = [(str(t["id"]) + (" *" if t["current"] else ""), t["label"] or "-",
             display.local_time(t["created_at"]),
             display.local_time(t["expires_at"]) if t["expires_at"] else "never",
             display.local_time(t["revoked_at"]) if t["revoked_at"] else "")
            for t in tokens]
    display.print_table(("ID", "LABEL", "CREATED", "EXPIRES", "REVOKED"), rows)
    return 0


def cmd_revoke_token(args: argparse.Namespace) -> int:
    token = Client.from_env().revoke_token(args.id)
    if args.json:
        display.print_json(token)
    else:
        print(f"token {token['id']} revoked" + (" (the one in use here: sign in again)"
                                                if token["current"] else ""))
    return 0


def add_commands(command) -> None:
    """Register the commands with `command(name, handler, help)` of the CLI's parser."""
    command("tokens", cmd_tokens, "your tokens: when each was made, expires, was revoked "
            "(* the one in use here)")
    p = command("revoke-token", cmd_revoke_token, "revoke one of your tokens (by the ID "
                "`tokens` shows); the others stay live")
    p.add_argument("id", type=int, metavar="ID")
