"""Config dataclasses from the command line: named presets plus `--key=value` overrides.

STYLE rule 3: a config is a dataclass whose every field has a default and a comment; presets are a
dict of named instances; the command line may only override fields that exist, with values that
parse as the field's declared type. No globals, no `exec` (unlike nanoGPT's configurator).

Accepted argument forms: `--key=value`, `--key value`, and for booleans a bare `--flag` (True) or
`--no-flag` (False). Supported field types: bool, int, float, str, `Optional[X]` ("none"/"null"),
`X | Y` unions (tried in order, e.g. `int | str` for `--fold=all`), `Literal[...]` choices, and
`tuple[X, ...]` / `list[X]` / `tuple[X, Y]` written comma-separated.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union

C = TypeVar("C")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def parse_value(text: str, annotation: Any, name: str = "value") -> Any:
    """Parse a command-line string as a value of the type `annotation`.

    Args:
        text: the raw string after `=`.
        annotation: a resolved type hint (e.g. `int`, `float | None`, `tuple[int, ...]`).
        name: the field name, used in error messages.

    Returns:
        The parsed value.

    Raises:
        ValueError: naming the field, the text and the expected type.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if type(None) in args and text.strip().lower() in _NONE:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, option, name)
            except ValueError:
                continue
        raise ValueError(f"--{name}={text!r}: expected {_type_name(annotation)}")
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"--{name}={text!r}: expected one of "
                         f"{', '.join(map(str, args))}")
    if origin in (tuple, list):
        items = [t.strip() for t in text.split(",") if t.strip()] if text.strip() else []
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ValueError(f"--{name}={text!r}: expected {len(args)} comma-separated values")
            return tuple(parse_value(t, a, name) for t, a in zip(items, args))
        item_type = args[0] if args else str
        values = [parse_value(t, item_type, name) for t in items]
        return tuple(values) if origin is tuple else values
    if annotation is bool:
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError(f"--{name}={text!r}: expected a boolean (true/false, 1/0, yes/no)")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(f"--{name}={text!r}: expected {annotation.__name__}") from None
    if annotation is str:
        return text
    raise ValueError(f"--{name}: fields of type {_type_name(annotation)} cannot be set from the "
                     "command line")


def _type_name(annotation: Any) -> str:
    """Readable name of a type hint for error messages."""
    if typing.get_origin(annotation) is None and hasattr(annotation, "__name__"):
        return annotation.__name__  # int, str, ...
    return str(annotation).replace("typing.", "")  # Optional[tuple[int, ...]], int | str


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (also under `from __future__ import
    annotations`, where the raw annotations are strings)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key_error(key: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
    return ValueError(f"unknown option --{key}.{hint} (valid options: {', '.join(sorted(known))})")


def split_args(argv: list[str], bool_keys: set[str]) -> list[tuple[str, str]]:
    """Split raw arguments into (key, text) pairs, accepting the forms listed in the module doc.

    Args:
        argv: command-line arguments without the program name.
        bool_keys: names of boolean fields, which may appear as a bare `--flag` / `--no-flag`.

    Returns:
        A list of (key, value text) pairs in command-line order; dashes in keys become underscores.
    """
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ValueError(f"unexpected argument {arg!r}: options are written --key=value")
        key, eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if key in bool_keys:
                text = "true"
            elif key.startswith("no_") and key[3:] in bool_keys:
                key, text = key[3:], "false"
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
                text = argv[i]
            else:
                raise ValueError(f"option --{key} needs a value (--{key}=VALUE)")
        pairs.append((key, text))
        i += 1
    return pairs


def apply_overrides(config: C, argv: list[str]) -> C:
    """Return a copy of the dataclass `config` with `--key=value` overrides applied.

    Args:
        config: a dataclass instance (not modified).
        argv: override arguments, e.g. `["--epochs=3", "--lr", "1e-3", "--amp"]`.

    Returns:
        A new instance of the same class.

    Raises:
        ValueError: an unknown key (with close matches) or a value that does not parse.
    """
    types_ = field_types(type(config))
    bool_keys = {k for k, t in types_.items() if t is bool}
    changes = {}
    for key, text in split_args(argv, bool_keys):
        if key not in types_:
            raise _unknown_key_error(key, list(types_))
        changes[key] = parse_value(text, types_[key], key)
    return dataclasses.replace(config, **changes)


def config_from_args(presets: dict[str, C], argv: list[str], default: str,
                     preset_key: str = "preset") -> C:
    """Pick a preset (`--preset=name`, else `default`) and apply the other overrides to it.

    Args:
        presets: named config instances, all of one dataclass which has a `preset_key` field.
        argv: command-line arguments without the program name.
        default: the preset used when none is named.
        preset_key: the option that names the preset.

    Returns:
        The configured dataclass instance, with its `preset_key` field set to the preset's name.

    Raises:
        ValueError: an unknown preset name, an unknown key or a bad value.
    """
    name, rest = default, []
    pairs = iter(range(len(argv)))
    for i in pairs:
        arg = argv[i]
        if arg.startswith(f"--{preset_key}="):
            name = arg.split("=", 1)[1]
        elif arg == f"--{preset_key}" and i + 1 < len(argv):
            name = argv[i + 1]
            next(pairs)
        else:
            rest.append(arg)
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}.{hint} (presets: {', '.join(presets)})")
    base = dataclasses.replace(presets[name], **{preset_key: name})
    return apply_overrides(base, rest)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a dict of primitives (tuples become lists): JSON- and weights_only-safe."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild a dataclass from `to_dict` output; unknown keys (older/newer versions) are ignored.

    Lists are turned back into tuples where the field is declared as a tuple.
    """
    types_ = field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types_:
            continue
        if isinstance(value, list) and typing.get_origin(types_[key]) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def help_text(cls: type, presets: dict[str, Any] | None = None) -> str:
    """`--help` for a config dataclass: each field's type, default and source comment.

    The comments are read from the class's source, so the dataclass stays the one place where
    an option is documented (STYLE rule 3: every field has a comment).
    """
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): .+?#\s*(.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    types_ = field_types(cls)
    lines = [f"options (--key=value; booleans also --key / --no-key):"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  --{f.name}={default!r}  [{_type_name(types_[f.name])}]  "
                     f"{comments.get(f.name, '')}")
    if presets:
        lines.append(f"presets (--preset=NAME): {', '.join(presets)}")
    return "\n".join(lines)
