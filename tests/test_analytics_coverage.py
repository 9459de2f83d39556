"""Every public function of analytics/* is called by some test, with every one of its
parameters passed at least once (by keyword or by position). Read from the tests' source
(ast): a new public function or parameter fails here until a test calls it."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from pathlib import Path

import servecast.analytics as analytics_pkg

TESTS = Path(__file__).resolve().parent
ANALYTICS = Path(analytics_pkg.__file__).resolve().parent
PREFIX = "servecast.analytics."


def public_functions() -> dict[tuple[str, str], list[str]]:
    """(module, function) -> parameter names, for functions defined in analytics/*.py."""
    out = {}
    for path in sorted(ANALYTICS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                args = node.args
                out[(path.stem, node.name)] = [a.arg for a in args.posonlyargs + args.args
                                                + args.kwonlyargs]
    return out


def calls_in_tests() -> dict[tuple[str, str], set[str]]:
    """(module, function) -> parameter names some test call passes."""
    params = public_functions()
    passed: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in TESTS.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        modules: dict[str, str] = {}  # local name -> analytics module
        names: dict[str, tuple[str, str]] = {}  # local name -> (module, function)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "servecast.analytics":
                    for a in node.names:
                        modules[a.asname or a.name] = a.name
                elif node.module.startswith(PREFIX):
                    mod = node.module[len(PREFIX):]
                    for a in node.names:
                        names[a.asname or a.name] = (mod, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(PREFIX) and a.asname:
                        modules[a.asname] = a.name[len(PREFIX):]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            key = None
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                    and f.value.id in modules:
                key = (modules[f.value.id], f.attr)
            elif isinstance(f, ast.Name) and f.id in names:
                key = names[f.id]
            if key not in params:
                continue
            star = any(isinstance(a, ast.Starred) for a in node.args)
            n_pos = len(params[key]) if star else len(node.args)
            passed[key].update(params[key][:n_pos])
            passed[key].update(k.arg for k in node.keywords if k.arg)
            if any(k.arg is None for k in node.keywords):  # **kwargs: all of them
                passed[key].update(params[key])
            passed[key].add("")  # called at all
    return passed


def test_every_public_analytics_function_and_parameter_is_called():
    params, passed = public_functions(), calls_in_tests()
    assert len(params) > 80  # the scan found the modules
    missing = {f"{m}.{f}": sorted(set(ps) - passed[(m, f)]) or "never called"
               for (m, f), ps in params.items()
               if "" not in passed[(m, f)] or set(ps) - passed[(m, f)]}
    assert not missing, f"call these in a test: {missing}"


def test_the_scan_matches_the_modules_signatures():
    from servecast.analytics import cluster, synth

    params = public_functions()
    assert params[("cluster", "duration_cdf")] == list(
        inspect.signature(cluster.duration_cdf).parameters)
    assert params[("synth", "synthesize")] == list(
        inspect.signature(synth.synthesize).parameters)
