#!/usr/bin/env python3
"""Make each role's defaults/main.yml and README variable table from its
meta/argument_specs.yml, the one place a variable's meaning and default live.

usage: role-vars.py [--check] [ROLE_DIR ...]     (default: every roles/*)

Without --check the files are rewritten; with it nothing is written and the
exit status is 1 when a file differs from what the specs give (lint runs this).
"""

import argparse
import json
import pathlib
import sys
import textwrap

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
README_BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml by scripts/role-vars.py -->"
README_END = "<!-- END VARIABLES -->"
DEFAULTS_HEADER = """\
---
# Generated from meta/argument_specs.yml by scripts/role-vars.py: edit the
# specs (meaning, type, default), then run `make role-vars`.
"""


def description(option: dict) -> str:
    text = option.get("description", "")
    return " ".join(text) if isinstance(text, list) else str(text)


def yaml_value(value) -> str:
    """A default as YAML: plain where that reads back the same, else JSON
    (valid YAML) so Jinja expressions are always double-quoted."""
    if isinstance(value, str):
        plain = yaml.safe_dump(value, width=1000).removesuffix("...\n").strip()
        if value and plain == value and "{" not in value:
            return plain
    elif not isinstance(value, (list, dict)):
        return yaml.safe_dump(value).removesuffix("...\n").strip()
    return json.dumps(value, separators=(", ", ": "))


def render_defaults(options: dict) -> str:
    parts = [DEFAULTS_HEADER]
    for name, option in options.items():
        if "default" not in option:
            continue
        parts.append("\n")
        parts.extend(f"# {line}\n" for line in textwrap.wrap(description(option), 78))
        parts.append(f"{name}: {yaml_value(option['default'])}\n")
    return "".join(parts)


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(options: dict) -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, option in options.items():
        if "default" in option:
            value = option["default"]
            default = f"`{cell(value if isinstance(value, str) and value else yaml_value(value))}`"
        else:
            default = "required"
        kind = option.get("type", "str")
        if option.get("choices"):
            kind += ": " + ", ".join(f"`{c}`" for c in option["choices"])
        rows.append(f"| `{name}` ({kind}) | {default} | {cell(description(option))} |")
    return "\n".join(rows) + "\n"


def render_readme(readme: str, options: dict, path: pathlib.Path) -> str:
    if README_BEGIN not in readme or README_END not in readme:
        sys.exit(f"{path}: no variable table markers ({README_BEGIN} ... {README_END})")
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{render_table(options)}{README_END}{tail}"


def check_entry_points(specs: dict, path: pathlib.Path) -> list[str]:
    """Other entry points (tasks_from) must not give a variable another default."""
    main = specs["main"]["options"]
    problems = []
    for entry, spec in specs.items():
        for name, option in spec.get("options", {}).items():
            if name in main and option.get("default") != main[name].get("default"):
                problems.append(f"{path}: {entry}.{name} has another default than main.{name}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail on drift")
    parser.add_argument("roles", nargs="*", type=pathlib.Path)
    args = parser.parse_args()
    roles = args.roles or sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))

    problems = []
    for role in roles:
        spec_path = role / "meta" / "argument_specs.yml"
        specs = yaml.safe_load(spec_path.read_text())["argument_specs"]
        problems += check_entry_points(specs, spec_path)
        options = specs["main"]["options"]
        readme_path = role / "README.md"
        wanted = {
            role / "defaults" / "main.yml": render_defaults(options),
            readme_path: render_readme(readme_path.read_text(), options, readme_path),
        }
        for path, text in wanted.items():
            current = path.read_text() if path.exists() else ""
            if current == text:
                continue
            if args.check:
                problems.append(f"{path}: differs from {spec_path} (run scripts/role-vars.py)")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
