"""Mutation testing of quiv's pure modules: ``python tools/mutation.py`` (``make mutation``).

Each mutant is one small change to one module (a comparison flipped, a bound
moved by one, a ``raise`` dropped...). A mutant is *killed* when the module's
targeted tests fail with it in place; one that *survives* is a change the tests
cannot see, i.e. a gap. The run fails if any mutant survives, unless it is
listed in ``EQUIVALENT`` with the reason why no test can ever tell it apart.

Why our own runner rather than mutmut or cosmic-ray: the modules are small and
pure, so a mutant can be applied inside a forked copy of one process that has
already imported pytest, hypothesis and quiv. Each mutant then costs a fork and
a targeted pytest run (tens of milliseconds), not a fresh interpreter, a copied
source tree or a session database, and it works with the src layout and the
editable install as they are.

The mutant replaces the ``__code__`` of each function in the live module (and
rebinds module-level constants), so every reference to the function, including
names the tests imported with ``from ... import``, runs the mutated code.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Module under test -> the fast tests that must kill its mutants.
TARGETS: dict[str, list[str]] = {
    "quiv._schedule": ["tests/test_schedule.py"],
    "quiv._validation": ["tests/test_validation.py"],
}

#: Mutants no test can kill, as (module, source line, mutation) -> why they are equivalent.
EQUIVALENT: dict[tuple[str, str, str], str] = {}

#: Seconds a mutant's test run may take before it counts as killed (it looped).
TIMEOUT = 60.0

_SWAPS: dict[type[ast.AST], list[type[ast.AST]]] = {
    ast.Lt: [ast.LtE, ast.Gt],
    ast.LtE: [ast.Lt, ast.GtE],
    ast.Gt: [ast.GtE, ast.Lt],
    ast.GtE: [ast.Gt, ast.LtE],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.Div],
    ast.Div: [ast.Mult],
    ast.FloorDiv: [ast.Div],
    ast.Mod: [ast.FloorDiv],
    ast.And: [ast.Or],
    ast.Or: [ast.And],
}
_CALL_SWAPS = {"floor": "ceil", "ceil": "floor", "max": "min", "min": "max"}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # which mutable spot, in walk order
    variant: int  # which of its mutations
    line: int
    description: str

    def key(self, source_lines: list[str]) -> tuple[str, str, str]:
        return (self.module, source_lines[self.line - 1].strip(), self.description)


def _op_name(op: type[ast.AST]) -> str:
    return op.__name__


Mutation = Callable[[ast.AST], ast.AST]


def _set(attribute: str, value: Callable[[ast.AST], object]) -> Mutation:
    """A mutation that sets ``node.<attribute>`` to ``value(node)`` and keeps the node."""

    def apply(node: ast.AST) -> ast.AST:
        setattr(node, attribute, value(node))
        return node

    return apply


def _make(spec: type[ast.AST] | list[type[ast.AST]]) -> Callable[[ast.AST], object]:
    """A fresh operator node (or a list of one) of the given type, for each mutant."""
    if isinstance(spec, list):
        return lambda _: [op() for op in spec]
    return lambda _: spec()


def _replace(make: Callable[[ast.AST], ast.AST]) -> Mutation:
    return make


def _rename_call(other: str) -> Mutation:
    def apply(node: ast.AST) -> ast.AST:
        func = node.func  # type: ignore[attr-defined]
        if isinstance(func, ast.Attribute):
            func.attr = other
        else:
            func.id = other
        return node

    return apply


def _variants(node: ast.AST) -> list[tuple[str, Mutation]]:
    """The mutations of one node: (description, function returning the mutated node)."""
    found: list[tuple[str, Mutation]] = []
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        compare = type(node.ops[0])
        for new in _SWAPS.get(compare, []):
            found.append((f"{_op_name(compare)} -> {_op_name(new)}", _set("ops", _make([new]))))
    elif isinstance(node, ast.BinOp | ast.AugAssign | ast.BoolOp):
        operator = type(node.op)
        for new in _SWAPS.get(operator, []):
            found.append((f"{_op_name(operator)} -> {_op_name(new)}", _set("op", _make(new))))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        found.append(("drop not", _replace(lambda n: n.operand)))  # type: ignore[attr-defined]
    elif isinstance(node, ast.Constant) and not isinstance(node.value, str | bytes):
        value = node.value
        if isinstance(value, bool):
            found.append((f"{value} -> {not value}", _replace(lambda _: ast.Constant(not value))))
        elif isinstance(value, int):
            found.append((f"{value} -> {value + 1}", _replace(lambda _: ast.Constant(value + 1))))
        elif isinstance(value, float):
            twice = value * 2 if value else 1.0
            found.append((f"{value} -> {twice}", _replace(lambda _: ast.Constant(twice))))
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in _CALL_SWAPS:
            found.append((f"{name} -> {_CALL_SWAPS[name]}", _rename_call(_CALL_SWAPS[name])))
    elif isinstance(node, ast.Raise):
        found.append(("drop raise", _replace(lambda _: ast.Pass())))
    elif isinstance(node, ast.If):
        found.append(("negate if", _set("test", lambda n: ast.UnaryOp(ast.Not(), n.test))))  # type: ignore[attr-defined]
    elif isinstance(node, ast.Return) and node.value is not None:
        found.append(("return None", _replace(lambda _: ast.Return(ast.Constant(None)))))
    return found


def _mutable_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node worth mutating, in a fixed order; docstrings and ``__all__`` are skipped."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.update(id(n) for n in ast.walk(first))
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.ImportFrom | ast.Import):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.JoinedStr):  # error messages: wording is not behaviour
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) not in skip and _variants(node):
            yield node


def enumerate_mutants(module: str, tree: ast.Module) -> list[Mutant]:
    mutants = []
    for index, node in enumerate(_mutable_nodes(tree)):
        for variant, (description, _) in enumerate(_variants(node)):
            mutants.append(Mutant(module, index, variant, getattr(node, "lineno", 0), description))
    return mutants


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST, variant: int) -> None:
        self.target, self.variant = target, variant

    def generic_visit(self, node: ast.AST) -> ast.AST:
        node = super().generic_visit(node)
        if node is self.target:
            _, apply = _variants(node)[self.variant]
            return ast.copy_location(apply(node), node)
        return node


def mutated_namespace(
    module: types.ModuleType, tree: ast.Module, mutant: Mutant
) -> dict[str, object]:
    tree = copy.deepcopy(tree)
    target = list(_mutable_nodes(tree))[mutant.index]
    tree = ast.fix_missing_locations(_Apply(target, mutant.variant).visit(tree))
    namespace: dict[str, object] = {"__name__": module.__name__, "__package__": module.__package__}
    exec(compile(tree, module.__file__ or "<mutant>", "exec"), namespace)
    return namespace


def install(module: types.ModuleType, namespace: dict[str, object]) -> None:
    """Make the live ``module`` behave as the mutated one, for every existing reference."""
    for name, new in namespace.items():
        old = module.__dict__.get(name)
        if isinstance(old, types.FunctionType) and isinstance(new, types.FunctionType):
            old.__code__ = new.__code__
            old.__defaults__ = new.__defaults__
            old.__kwdefaults__ = new.__kwdefaults__
        elif not isinstance(new, type | types.ModuleType | types.FunctionType) and not (
            name.startswith("__")
        ):
            setattr(module, name, new)


def run_tests(tests: list[str]) -> int:
    import pytest
    from hypothesis import settings

    # Deterministic, and lighter than the suite's default: a mutant is usually
    # killed by the first few examples, and a survivor is reported, not hidden.
    settings.register_profile(
        "mutation", database=None, derandomize=True, deadline=None, max_examples=50
    )
    settings.load_profile("mutation")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    # pytest warns that the modules imported before it (in the parent) cannot
    # have their asserts rewritten; the suite turns warnings into errors.
    arguments = ["-x", "-q", "-p", "no:cacheprovider", "-o", "timeout=0"]
    arguments += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return int(pytest.main([*tests, *arguments], plugins=[_ExamplesFirst()]))


class _ExamplesFirst:
    """Run example tests before property tests: most mutants die on an example, cheaply."""

    def pytest_collection_modifyitems(self, items: list[object]) -> None:
        items.sort(key=lambda item: hasattr(getattr(item, "obj", None), "hypothesis"))


def start_mutant(
    module: types.ModuleType, tree: ast.Module, mutant: Mutant, tests: list[str]
) -> int:
    """Fork a child that applies ``mutant`` and runs ``tests``; it exits 0 if it survived."""
    pid = os.fork()
    if pid == 0:  # the child: mutate, test, report by exit status
        code = 3
        try:
            install(module, mutated_namespace(module, tree, mutant))
            code = 0 if run_tests(tests) == 0 else 1
        except BaseException:
            code = 2  # the mutant does not even load: killed
        finally:
            os._exit(code)
    return pid


def run_all(
    module: types.ModuleType, tree: ast.Module, mutants: list[Mutant], tests: list[str], jobs: int
) -> list[Mutant]:
    """Run every mutant, ``jobs`` at a time; return the survivors."""
    waiting = list(reversed(mutants))
    running: dict[int, tuple[Mutant, float]] = {}
    survivors: list[Mutant] = []
    while waiting or running:
        while waiting and len(running) < jobs:
            mutant = waiting.pop()
            running[start_mutant(module, tree, mutant, tests)] = (mutant, time.monotonic())
        for pid, (mutant, began) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del running[pid]
                if os.waitstatus_to_exitcode(status) == 0:
                    survivors.append(mutant)
            elif time.monotonic() - began > TIMEOUT:  # it loops: killed
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                del running[pid]
        time.sleep(0.005)
    return sorted(survivors, key=lambda m: (m.index, m.variant))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TARGETS), help="modules to mutate")
    parser.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1))
    options = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "tests"))
    importlib.import_module("pytest")  # imported once here, shared by every forked child
    importlib.import_module("hypothesis")
    for name in options.modules:  # imported once here too: the children only run them
        for path in TARGETS[name]:
            importlib.import_module(Path(path).stem)
    started = time.monotonic()
    failures = 0
    for name in options.modules:
        tests = TARGETS[name]
        module = importlib.import_module(name)
        source = Path(module.__file__ or "").read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        if run_tests_in_child(tests) != "survived":
            print(f"{name}: the unmutated tests fail; fix them first")
            return 1
        mutants = enumerate_mutants(name, tree)
        survivors = [
            m
            for m in run_all(module, tree, mutants, tests, options.jobs)
            if m.key(lines) not in EQUIVALENT
        ]
        print(f"{name}: {len(mutants)} mutants, {len(survivors)} surviving")
        for mutant in survivors:
            _, line, description = mutant.key(lines)
            print(f"  SURVIVED line {mutant.line}: {description}    | {line}")
        failures += len(survivors)
    print(f"mutation testing took {time.monotonic() - started:.0f}s")
    return 1 if failures else 0


def run_tests_in_child(tests: list[str]) -> str:
    """Run the tests unmutated in a child, as a mutant would be (a baseline)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = 0 if run_tests(tests) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"


if __name__ == "__main__":
    sys.exit(main())
