"""`jobqueue completion bash|zsh|fish`: shell completion scripts made from the CLI's own
argparse parser, so a new command, option or state completes without editing a script.

argparse has no public way to list a parser's options and subcommands; its `_actions`
and `_choices_actions` are what every argparse completion tool reads.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass

SHELLS = ("bash", "zsh", "fish")

# Metavars whose values are paths: completed with file (or folder) names.
FILE_METAVARS = frozenset({"PATH", "FILE"})
DIR_METAVARS = frozenset({"DIR"})


@dataclass(frozen=True)
class Value:
    """What an option's or a positional's value is completed with."""

    kind: str  # "files", "dirs", "words" (choices) or "" (nothing to offer)
    words: tuple[str, ...] = ()
    metavar: str = ""


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    help: str
    value: Value | None  # None: a flag that takes no value
    repeatable: bool


@dataclass(frozen=True)
class Positional:
    value: Value
    many: bool  # nargs "*" or "+"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]
    # "--" ends the options and what follows are the script's own arguments (submit).
    passthrough: bool = False


@dataclass(frozen=True)
class Spec:
    prog: str
    options: tuple[Option, ...]
    commands: tuple[Command, ...]


def _value(action: argparse.Action) -> Value:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if action.choices is not None:
        return Value("words", tuple(str(c) for c in action.choices), metavar or action.dest)
    if metavar in FILE_METAVARS:
        return Value("files", metavar=metavar)
    if metavar in DIR_METAVARS:
        return Value("dirs", metavar=metavar)
    return Value("", metavar=metavar or action.dest)


def _options(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    found = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        takes_value = action.nargs != 0
        found.append(Option(
            flags=tuple(action.option_strings),
            help=str(action.help or ""),
            value=_value(action) if takes_value else None,
            repeatable=isinstance(action, argparse._AppendAction | argparse._CountAction),
        ))
    return tuple(found)


def _positionals(parser: argparse.ArgumentParser) -> tuple[Positional, ...]:
    return tuple(Positional(_value(a), a.nargs in ("*", "+")) for a in parser._actions
                 if not a.option_strings and not isinstance(a, argparse._SubParsersAction))


def describe(parser: argparse.ArgumentParser, passthrough: tuple[str, ...] = ()) -> Spec:
    """The commands and options of `parser`; `passthrough`: commands that take `--`."""
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: str(a.help or "") for a in sub._choices_actions}
    commands = []
    for name, command in sub.choices.items():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            raise ValueError(f"command {name!r} cannot be completed safely")
        commands.append(Command(name, helps.get(name, ""), _options(command),
                                _positionals(command), name in passthrough))
    return Spec(parser.prog, _options(parser), tuple(commands))


def script(spec: Spec, shell: str) -> str:
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](spec)


# -- bash -------------------------------------------------------------------------------


def _words(words) -> str:
    return shlex.quote(" ".join(words))


def _bash_value(value: Value, indent: str) -> str:
    """Lines that fill COMPREPLY for `value` from $cur."""
    if value.kind == "files":
        return f"{indent}_{{fn}}_paths -f"
    if value.kind == "dirs":
        return f"{indent}_{{fn}}_paths -d"
    if value.kind == "words":
        return f'{indent}mapfile -t COMPREPLY < <(compgen -W {_words(value.words)} -- "$cur")'
    return f"{indent}COMPREPLY=()"


def _bash_command(command: Command) -> list[str]:
    lines = [f"        {command.name})"]
    if command.passthrough:
        lines.append('            if [[ $dashdash ]]; then _{fn}_paths -f; return 0; fi')
    # The value of an option, by what it is completed with.
    by_value: dict[str, list[str]] = {}
    for option in command.options:
        if option.value is not None:
            by_value.setdefault(_bash_value(option.value, " " * 20), []).extend(option.flags)
    if by_value:
        lines.append('            case $prev in')
        for fill, flags in by_value.items():
            lines.append(f"                {'|'.join(flags)})")
            lines.append(fill + "; return 0 ;;")
        lines.append("            esac")
    flags = [f for o in command.options for f in o.flags]
    lines.append('            if [[ $cur == -* ]]; then')
    lines.append(f'                mapfile -t COMPREPLY < <(compgen -W {_words(flags)} -- "$cur")')
    lines.append("                return 0")
    lines.append("            fi")
    # The positional the word under the cursor fills: the nargs-th, or the last if it
    # takes many.
    if command.positionals:
        lines.append("            case $nargs in")
        last = len(command.positionals) - 1
        for n, positional in enumerate(command.positionals):
            many = "|*" if n == last and positional.many else ""
            lines.append(f"                {n}{many})")
            lines.append(_bash_value(positional.value, " " * 20) + " ;;")
        lines.append("            esac")
    lines.append("            ;;")
    return lines


def bash(spec: Spec) -> str:
    fn = re.sub(r"\W", "_", spec.prog)
    top_flags = [f for o in spec.options for f in o.flags]
    top_valued = [f for o in spec.options if o.value is not None for f in o.flags]
    # Every option that takes a value, per command: its value is not a positional.
    valued = {c.name: [f for o in c.options if o.value is not None for f in o.flags]
              for c in spec.commands}
    valued_cases = "\n".join(
        f"                {name}) case $w in {'|'.join(flags)}) ((j++)) ;; esac ;;"
        for name, flags in valued.items() if flags)
    lines = [
        f"# bash completion for {spec.prog}: made from its parser by "
        f"`{spec.prog} completion bash`.",
        f"# Install: {spec.prog} completion bash > ~/.local/share/bash-completion/completions/"
        f"{spec.prog}",
        "",
        "_{fn}_paths() {",
        "    compopt -o filenames 2>/dev/null",
        '    mapfile -t COMPREPLY < <(compgen "$1" -- "$cur")',
        "}",
        "",
        "_{fn}() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    local cmd= dashdash= nargs=0 w j=1",
        "    COMPREPLY=()",
        '    # "--state=que": bash splits the word at "=" (COMP_WORDBREAKS).',
        '    if [[ $cur == = ]]; then',
        "        cur=",
        '    elif [[ $prev == = ]]; then',
        "        prev=${COMP_WORDS[COMP_CWORD-2]}",
        "    fi",
        "    # The command: the first word that is neither an option nor an option's value.",
        "    while ((j < COMP_CWORD)); do",
        "        w=${COMP_WORDS[j]}",
        "        if [[ -z $cmd ]]; then",
        "            case $w in",
        *([f"                {'|'.join(top_valued)}) ((j++)) ;;"] if top_valued else []),
        "                -*) ;;",
        "                *) cmd=$w ;;",
        "            esac",
        "        elif [[ $dashdash ]]; then",
        "            :",
        "        elif [[ $w == -- ]]; then",
        "            dashdash=1",
        "        elif [[ $w == -* ]]; then",
        "            case $cmd in",
        valued_cases,
        "            esac",
        "        elif [[ $w != = && ${COMP_WORDS[j-1]} != = ]]; then",
        "            ((nargs++))",
        "        fi",
        "        ((j++))",
        "    done",
        '    if [[ -z $cmd ]]; then',
        '        if [[ $cur == -* ]]; then',
        f'            mapfile -t COMPREPLY < <(compgen -W {_words(top_flags)} -- "$cur")',
        "        else",
        "            mapfile -t COMPREPLY < <(compgen -W "
        f'{_words(c.name for c in spec.commands)} -- "$cur")',
        "        fi",
        "        return 0",
        "    fi",
        "    case $cmd in",
        *(line for c in spec.commands for line in _bash_command(c)),
        "    esac",
        "    return 0",
        "}",
        "",
        f"complete -F _{{fn}} {spec.prog}",
        "",
    ]
    return "\n".join(lines).replace("{fn}", fn)


# -- zsh --------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    """`text` inside a single-quoted _arguments spec, within [...] or after a colon."""
    text = text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    return text.replace(":", "\\:").replace("'", "'\\''")


def _zsh_action(value: Value) -> str:
    if value.kind == "files":
        return "_files"
    if value.kind == "dirs":
        return "_files -/"
    if value.kind == "words":
        return "(" + " ".join(value.words) + ")"
    return " "


def _zsh_option(option: Option) -> str:
    help = _zsh_quote(option.help)
    value = ""
    if option.value is not None:
        value = f":{_zsh_quote(option.value.metavar.lower())}:{_zsh_action(option.value)}"
    flags = [f + "=" if option.value is not None and f.startswith("--") else f
             for f in option.flags]
    if option.repeatable:
        prefix = "*"
    elif len(flags) > 1:
        prefix = "(" + " ".join(option.flags) + ")"
    else:
        prefix = ""
    if len(flags) == 1:
        return f"'{prefix}{flags[0]}[{help}]{value}'"
    return f"'{prefix}'{{{','.join(flags)}}}'[{help}]{value}'"


def _zsh_arguments(options, positionals, indent: str, tail: list[str]) -> list[str]:
    specs = [_zsh_option(o) for o in options]
    for n, positional in enumerate(positionals, 1):
        where = "*" if positional.many else str(n)
        specs.append(f"'{where}:{_zsh_quote(positional.value.metavar.lower())}:"
                     f"{_zsh_action(positional.value)}'")
    specs += tail
    return [f"{indent}_arguments -s -S \\"] + [f"{indent}  {s} \\" for s in specs[:-1]] + [
        f"{indent}  {specs[-1]}"]


def zsh(spec: Spec) -> str:
    fn = "_" + re.sub(r"\W", "_", spec.prog)
    lines = [
        f"#compdef {spec.prog}",
        f"# zsh completion for {spec.prog}: made from its parser by `{spec.prog} completion zsh`.",
        f"# Install: {spec.prog} completion zsh > ~/.zfunc/_{spec.prog}, with ~/.zfunc in fpath",
        "# before compinit; or source it from ~/.zshrc after compinit.",
        "",
        f"{fn}() {{",
        "  local curcontext=$curcontext state line",
        "  typeset -A opt_args",
        "  local -a commands",
        "  commands=(",
        # _describe: the description is all after the first colon, taken as it is.
        *(f"    '{c.name}:" + c.help.replace("'", "'\\''") + "'" for c in spec.commands),
        "  )",
        *_zsh_arguments(spec.options, (), "  ", ["': :->command'", "'*:: :->argument'"]),
        "  case $state in",
        "    command)",
        f"      _describe -t commands '{spec.prog} command' commands ;;",
        "    argument)",
        f"      curcontext=${{curcontext%:*:*}}:{spec.prog}-$line[1]:",
        "      case $line[1] in",
    ]
    for command in spec.commands:
        # After "--", submit's script arguments: any words, files offered.
        tail = ["'*::script argument:_files'"] if command.passthrough else []
        lines.append(f"        {command.name})")
        lines += _zsh_arguments(command.options, command.positionals, "          ", tail)
        lines[-1] += " ;;"
    lines += [
        "      esac ;;",
        "  esac",
        "}",
        "",
        "if [[ $zsh_eval_context[-1] == loadautofunc ]]; then",
        f'  {fn} "$@"',
        "else",
        f"  compdef {fn} {spec.prog}",
        "fi",
        "",
    ]
    return "\n".join(lines)


# -- fish -------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_flags(option: Option) -> str:
    parts = []
    for flag in option.flags:
        if flag.startswith("--"):
            parts.append(f"-l {flag[2:]}")
        else:
            parts.append(f"-s {flag[1:]}")
    return " ".join(parts)


def _fish_value(value: Value | None) -> str:
    if value is None:
        return ""
    if value.kind == "files":
        return " -r -F"
    if value.kind == "dirs":
        return " -x -a '(__fish_complete_directories)'"
    if value.kind == "words":
        return " -x -a " + _fish_quote(" ".join(value.words))
    return " -x"


def fish(spec: Spec) -> str:
    prog = spec.prog
    names = " ".join(c.name for c in spec.commands)
    top = f"-n 'not __fish_seen_subcommand_from {names}'"
    lines = [
        f"# fish completion for {prog}: made from its parser by `{prog} completion fish`.",
        f"# Install: {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
        "",
        f"complete -c {prog} -f",
    ]
    for option in spec.options:
        lines.append(f"complete -c {prog} {top} {_fish_flags(option)}"
                     f"{_fish_value(option.value)} -d {_fish_quote(option.help)}")
    for command in spec.commands:
        lines.append(f"complete -c {prog} {top} -a {command.name} -d {_fish_quote(command.help)}")
    for command in spec.commands:
        seen = f"-n '__fish_seen_subcommand_from {command.name}'"
        for option in command.options:
            lines.append(f"complete -c {prog} {seen} {_fish_flags(option)}"
                         f"{_fish_value(option.value)} -d {_fish_quote(option.help)}")
        kinds = {p.value.kind for p in command.positionals}
        words = [w for p in command.positionals for w in p.value.words]
        if "files" in kinds or command.passthrough:
            lines.append(f"complete -c {prog} {seen} -F")
        if words:
            lines.append(f"complete -c {prog} {seen} -a {_fish_quote(' '.join(words))}")
    lines.append("")
    return "\n".join(lines)
