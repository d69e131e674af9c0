#!/usr/bin/env python3
"""Write the settings tables of service/README.md from the settings dataclasses, where
each key's meaning and default live (`jobqueue.config.setting`).

usage: settings-tables.py [--check]

Without --check the README is rewritten; with it nothing is written and the exit
status is 1 when a table differs from what the code gives (lint runs this).
"""

import argparse
import importlib
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "service" / "README.md"
# The service's source, whatever version the virtualenv has installed.
sys.path.insert(0, str(ROOT / "service" / "src"))
from jobqueue.config import describe

# <!-- BEGIN SETTINGS module:Class --> ... <!-- END SETTINGS -->
BLOCK = re.compile(r"(<!-- BEGIN SETTINGS ([\w.]+):(\w+)[^>]*-->\n).*?(<!-- END SETTINGS -->)",
                   re.DOTALL)


def table(module: str, name: str) -> str:
    rows = describe(getattr(importlib.import_module(module), name))
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {default} | {meaning} |" for key, default, meaning in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report a difference")
    args = parser.parse_args()
    text = README.read_text()
    blocks = BLOCK.findall(text)
    if not blocks:
        print(f"{README}: no settings blocks", file=sys.stderr)
        return 1
    made = BLOCK.sub(lambda m: m[1] + table(m[2], m[3]) + m[4], text)
    if made == text:
        return 0
    if args.check:
        print(f"{README}: settings tables differ from the code; run `make settings-tables`",
              file=sys.stderr)
        return 1
    README.write_text(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
