"""Loading params.yaml into the typed schema of `codeblock.core.params`.

`load_config` reads the YAML, overlays a profile (`profiles/<name>.yaml`), applies
`-S group.key=value` overrides (the syntax of `dvc exp run -S`), and validates: an unknown key or
a value of the wrong type fails at load time, naming the key path and the closest valid key.
`codeblock params` prints every key with its default and help (`describe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from codeblock.core.params import Config, _leaf_fields


class ConfigError(ValueError):
    """A params file or override that does not match the schema."""


# ---------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with errors that name the key path.


# keys that were removed in favour of another: the error names the new one
MOVED_KEYS = {"eval.torch_threads": "model.torch_threads (one CPU-thread setting for every stage that loads a model)"}


def _close(name: str, options: list[str], prefix: str = "") -> str:
    m = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f"; did you mean '{prefix}{m[0]}'?" if m else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}{_close(str(value), [str(a) for a in args])}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}: {value!r} matches none of {_type_name(tp)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return {_coerce(k, args[0], f"{path}.<key>"): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected bool, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected int, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected float, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected str, got {type(value).__name__} {value!r}")
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [fl.name for fl in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        kp = f"{path}.{key}" if path else str(key)
        if key not in names and kp in MOVED_KEYS:
            raise ConfigError(f"'{kp}' was replaced by {MOVED_KEYS[kp]}")
        if key not in names:
            raise ConfigError(f"unknown key '{kp}'{_close(str(key), names, f'{path}.' if path else '')}")
        kwargs[key] = _coerce(value, hints[key], kp)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` (or `a.b[0].c`) in a nested dict, validating names against the schema later."""
    parts = dotted.replace("]", "").replace("[", ".").split(".")
    node: Any = tree
    for i, p in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(p)]
            continue
        nxt = node.get(p)
        if nxt is None:
            nxt = [] if parts[i + 1].isdigit() else {}
            node[p] = nxt
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=2e-4` -> ("train.lr", 0.0002). Values are read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip(), value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | None = None,
    profile: str | Path | None = None,
) -> Config:
    """Load params.yaml, overlay an optional profile file, apply `key=value` overrides, validate."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: params file not found")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if profile:
        pp = Path(profile)
        if not pp.is_file():  # a name (smoke), not a file; a folder named like it is no profile
            pp = Path(path or ".").parent / "profiles" / f"{profile}.yaml"
        if not pp.is_file():
            raise ConfigError(f"profile {profile!r}: no file {profile} nor {pp}")
        tree = _merge(tree, yaml.safe_load(pp.read_text()) or {})
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_path(tree, key, value)
    return _build(Config, tree, "")


def describe() -> list[tuple[str, Any, str]]:
    """(key path, default, help) for every leaf field, for docs and `codeblock params`."""
    rows = []
    for g, fl in _leaf_fields():
        default = fl.default if fl.default is not dataclasses.MISSING else fl.default_factory()  # type: ignore[misc]
        rows.append((f"{g}.{fl.name}", default, fl.metadata.get("help", "")))
    return rows
