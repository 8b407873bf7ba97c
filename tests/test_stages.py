"""The stage registry is the one list of stages: dvc.yaml, the CLI and every stage module agree with it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from codeblock.cli import ALIASES, build_parser
from codeblock.core.params import VOLATILE, result_keys
from codeblock.stages import STAGES, StageContext, StageResult, run_stage

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CLI_NAME = {stage: alias for alias, stage in ALIASES.items()}


def test_every_registered_stage_is_a_dvc_stage_and_back():
    assert set(DVC) == set(STAGES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_stage_matches_registry(name):
    stage, dvc = STAGES[name], DVC[name]
    cmd = dvc["cmd"].split()
    assert cmd[:2] == ["codeblock", CLI_NAME.get(name, name)]
    assert ("matrix" in dvc) == stage.per_method
    if stage.per_method:
        assert "--method ${item.method}" in dvc["cmd"]
    # the params DVC watches are exactly the result-changing keys the stage hashes
    assert dvc.get("params", []) == result_keys(*stage.params)
    assert not set(dvc.get("params", [])) & VOLATILE
    # the stage's own module is among its code dependencies; every code dependency exists
    code = [d for d in dvc.get("deps", []) if isinstance(d, str) and d.startswith("codeblock")]
    module_file = stage.module.replace(".", "/") + ".py"
    assert any(module_file == d or module_file.startswith(d.rstrip("/") + "/") for d in code), (module_file, code)
    assert all((ROOT / d).exists() for d in code)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_modules_define_the_entry_point(name):
    """run(cfg, ctx) with exactly those two parameters, found without importing torch-heavy code."""
    path = ROOT / (STAGES[name].module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "run" in fns, path
    assert [a.arg for a in fns["run"].args.args] == ["cfg", "ctx"]


def test_cli_offers_every_stage_and_its_options():
    for name in STAGES:
        cli = CLI_NAME.get(name, name)
        args = build_parser(cli).parse_args([cli, "--no-progress"])
        assert args.command == cli
        if STAGES[name].per_method:
            assert args.method is None  # the stage's default method applies
    args = build_parser("evaluate").parse_args(["evaluate", "--method", "m", "--model-path", "x", "--self-check"])
    assert (args.method, args.model_path, args.self_check) == ("m", "x", True)


def test_result_json_is_what_the_stage_returned(tmp_path, cfg):
    """`--result-json` (how a stage subprocess answers the flow) carries outputs and metrics."""
    import json

    from codeblock.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "res.json"
    rc = main(["data", "--params", str(params), "--no-progress", "--result-json", str(out),
               "-S", "tracking.enabled=false", "-S", "data.sources[0].limit=3", "-S", "data.sources[1].limit=3",
               "-S", "data.sources[2].limit=3"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["stage"] == "data" and res["outputs"] == [cfg.paths.pool]
    assert res["metrics"]["rows"] == 9
    cfg.tracking.enabled = False
    for src in cfg.data.sources:
        src.limit = 2
    direct = run_stage("data", cfg, StageContext(progress=False))
    assert isinstance(direct, StageResult) and direct.metrics["rows"] == 6


def test_no_module_imports_flows_or_cli():
    """Stages never reach into the orchestration layer (no import cycles through cli/flows)."""
    for path in (ROOT / "codeblock").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) flows\b", text, re.M), path
        assert not re.search(r"^\s*(from|import) codeblock\.cli\b", text, re.M), path


PLUMBING = {"codeblock.stages", "codeblock.core.config", "codeblock.core.params", "codeblock.core.io",
            "codeblock.core.tracking", "codeblock.core.launch", "codeblock.core.mlflow_pyfunc"}


def _imports(module: str) -> set[str]:
    """codeblock modules `module` imports (top-level or inside functions), by static reading."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("codeblock"):
            for alias in node.names:  # `from codeblock.select import dataflow` imports a module
                sub = f"{node.module}.{alias.name}"
                out.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists() else node.module)
            if (ROOT / node.module.replace(".", "/") / "__init__.py").exists():
                out.add(node.module)  # importing from a package runs its __init__ first
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("codeblock")}
    return {m for m in out if m != "codeblock"}


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m in PLUMBING:
            continue
        seen.add(m)
        todo.extend(_imports(m))
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_code_deps_cover_what_the_stage_imports(name):
    """Every result-bearing module a stage imports (transitively) is a DVC dependency of it, so
    editing that code reruns the stage."""
    code = [d.rstrip("/") for d in DVC[name].get("deps", []) if isinstance(d, str) and d.startswith("codeblock")]
    missing = []
    for mod in sorted(_closure(STAGES[name].module)):
        f = mod.replace(".", "/")
        if (ROOT / f).is_dir():
            continue  # a package's __init__ (docstring only; the cycle test keeps it import-free)
        if not any(f + ".py" == d or f == d or f.startswith(d + "/") for d in code):
            missing.append(f + ".py")
    assert not missing, f"dvc.yaml stage {name!r} lacks deps {missing}"


def test_no_import_cycles():
    """No cycle among codeblock's modules, counting imports inside functions too."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for p in (ROOT / "codeblock").rglob("*.py")}
    graph = {m: {i for i in _imports(m) if i in mods and i != m} for m in mods}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m)
