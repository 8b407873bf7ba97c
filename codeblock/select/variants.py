"""Method variants, so that every ablation is a method name in `pipeline.methods`, a dvc matrix
entry and a Prefect task like any baseline:

    <method>+<select key>=<value>[+<select key>=<value> ...]

e.g. `codeblock+rerank=none`, `codeblock+granularity=line`, `codeblock+nl_share=0`,
`codeblock+utility=ce+scope=per_sample`, `random_items+scope=per_sample`. The keys are those of
the `select:` group of params.yaml (all but `method`); values are read as YAML and validated like
params.yaml itself. The variant's labels, stats and model live under its full name
(`labels_dir/codeblock+rerank=none/`, ...); only the characters [A-Za-z0-9_.+=-] are allowed so
the name is a safe folder name everywhere.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

SEP = "+"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+=-]+$")


def parse_method(name: str) -> tuple[str, dict[str, Any]]:
    """(base method, {select key: value}) of a method name; raises ConfigError naming the bad part."""
    from codeblock.core.config import ConfigError, parse_override
    from codeblock.core.params import SelectConfig

    if not _NAME_RE.match(name):
        raise ConfigError(f"method {name!r}: only letters, digits and _ . + = - are allowed")
    base, *parts = name.split(SEP)
    keys = [f.name for f in dataclasses.fields(SelectConfig) if f.name != "method"]
    over: dict[str, Any] = {}
    for part in parts:
        key, value = parse_override(part)
        if key not in keys:
            raise ConfigError(f"method {name!r}: {key!r} is not a select key (one of {keys})")
        over[key] = value
    return base, over


def variant_config(cfg, name: str):
    """(base method, the config with the variant's select keys applied); cfg itself is unchanged."""
    from codeblock.core.config import _build
    from codeblock.core.params import SelectConfig

    base, over = parse_method(name)
    if not over:
        return base, cfg
    out = copy.deepcopy(cfg)
    data = {**cfg.to_dict()["select"], **over, "method": name}
    out.select = _build(SelectConfig, data, f"method {name!r}: select")
    return base, out
