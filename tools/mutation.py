"""Mutation testing of quiv's pure modules: ``python tools/mutation.py`` (``make mutation``).

Each mutant is one small change to one module (a comparison flipped, a bound
moved by one, a ``raise`` dropped...). A mutant is *killed* when the module's
targeted tests fail with it in place; one that *survives* is a change the tests
cannot see, i.e. a gap. The run fails if any mutant survives, unless it is
listed in ``EQUIVALENT`` with the reason why no test can ever tell it apart.

Why our own runner rather than mutmut or cosmic-ray: the modules are small and
pure, so a mutant can be applied inside a forked copy of one process. That
process runs pytest once, which collects (and imports) the targeted tests; then
each mutant costs a fork and the tests it runs until the first failure, not a
fresh interpreter, a pytest start-up, a copied source tree or a session
database, and it works with the src layout and the editable install as they are.

The mutant replaces the ``__code__`` of each function in the live module
(methods, properties and ``lru_cache``-wrapped functions included; caches are
cleared) and rebinds module constants and plain class attributes, so every
reference, including names the tests imported with ``from ... import`` and
objects built before the fork, runs the mutated code.
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
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent

#: Module under test -> the fast tests that must kill its mutants.
TARGETS: dict[str, list[str]] = {
    "quiv._schedule": ["tests/test_schedule.py"],
    "quiv._validation": ["tests/test_validation.py"],
    "quiv._stores._rows": ["tests/test_store_claims.py"],
    **{
        f"quiv._triggers._{name}": ["tests/test_triggers.py", "tests/test_timelines.py"]
        for name in ("base", "every", "cron", "at", "policies", "choose")
    },
}

#: Mutants no test can kill, as (module, source line, mutation) -> why they are equivalent.
EQUIVALENT: dict[tuple[str, str, str], str] = {
    (
        "quiv._validation",
        "_inspect_cached = functools.lru_cache(maxsize=512)(_inspect)",
        "512 -> 513",
    ): (
        "the cache's size only bounds the memory of handlers inspected: a handler "
        "evicted is inspected again, with the same answer"
    ),
    **{
        ("quiv._triggers._cron", "_PARSE_AT = datetime(2000, 1, 1)", change): (
            "where the validity check starts: cronsim looks 50 years ahead, and the "
            "longest wait between two matches of any expression (a 29 February on a "
            "given weekday) is 40 years, so any start in 2000 or 2001 finds the same"
        )
        for change in ("2000 -> 2001", "1 -> 2")
    },
    (
        "quiv._triggers._cron",
        "_evaluated: str = field(compare=False)  # the expression handed to cronsim",
        "False -> True",
    ): "_evaluated is a function of expression, which is compared already",
    (
        "quiv._triggers._cron",
        "for name, part in zip(names, parts, strict=False):",
        "False -> True",
    ): "names is chosen to have as many entries as parts, so strict never raises",
    ("quiv._triggers._cron", "if instant > previous:", "Gt -> GtE"): (
        "cronsim moves at least one second forward on the wall clock, and a time it "
        "maps back into a repeated hour lies before the start, never on it: no fire "
        "time equals the one before it"
    ),
}

#: A mutant's test run that takes this many times as long as the unmutated run
#: (and at least ``MIN_TIMEOUT`` seconds) loops: it is stopped and counts as killed.
TIMEOUT_FACTOR = 3.0
MIN_TIMEOUT = 5.0
#: The unmutated run may take this long.
BASELINE_TIMEOUT = 120.0
#: A mutant's test run that took longer than this is reported: a test could kill it sooner.
SLOW = 10.0
#: How many recent killer tests run first for the next mutant.
_KILLERS = 8
_KILLED_AT = 16

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
    elif isinstance(node, ast.Return) and not (
        node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None)
    ):
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
        if isinstance(node, ast.If) and all(
            isinstance(n, ast.Import | ast.ImportFrom) for n in node.body + node.orelse
        ):  # a version switch: it picks where a name comes from, not what it does
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            # Decorators (``@dataclass(frozen=True)``, ``@lru_cache(maxsize=...)``) made
            # the live class or wrapper, which a mutant keeps: it cannot change them.
            for decorator in node.decorator_list:
                skip.update(id(n) for n in ast.walk(decorator))
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


_PLAIN = (bool, int, float, complex, str, bytes, tuple, frozenset, type(None))


def _patch(old: object, new: object) -> bool:
    """Give ``old`` the behaviour of ``new`` in place; False if they are not both code."""
    if isinstance(old, types.FunctionType) and isinstance(new, types.FunctionType):
        old.__code__ = new.__code__
        old.__defaults__ = new.__defaults__
        old.__kwdefaults__ = new.__kwdefaults__
        return True
    if isinstance(old, property) and isinstance(new, property):
        for accessor in ("fget", "fset", "fdel"):
            before, after = getattr(old, accessor), getattr(new, accessor)
            if before is not None and after is not None:
                _patch(before, after)
        return True
    if isinstance(old, staticmethod | classmethod) and isinstance(new, type(old)):
        return _patch(old.__func__, new.__func__)
    wrapped = getattr(old, "__wrapped__", None)
    if wrapped is not None and hasattr(old, "cache_clear"):  # functools.lru_cache
        patched = _patch(wrapped, getattr(new, "__wrapped__", None))
        old.cache_clear()  # results of the unmutated code must not answer for the mutant
        return patched
    return False


def install(module: types.ModuleType, namespace: dict[str, object]) -> None:
    """Make the live ``module`` behave as the mutated one, for every existing reference.

    Functions (module level, methods, properties, ``lru_cache`` wrappers) keep
    their identity and get the mutated code; module constants and plain class
    attributes (``wall_clock = True``) are rebound. Classes themselves are kept,
    so instances and ``isinstance`` checks made before the mutant still hold.
    """
    for name, new in namespace.items():
        if name.startswith("__"):
            continue
        old = module.__dict__.get(name)
        if isinstance(new, type):
            if isinstance(old, type) and new.__module__ == module.__name__:
                for attribute, value in vars(new).items():
                    current = vars(old).get(attribute)
                    plain = isinstance(value, _PLAIN) and not attribute.startswith("__")
                    if not _patch(current, value) and plain:
                        setattr(old, attribute, value)
        elif not _patch(old, new) and not isinstance(new, types.ModuleType):
            setattr(module, name, new)


def _silence() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _run_items(items: list[Any]) -> NoReturn:
    """In a child: run ``items`` in order; exit 0 if all pass, else name the first failure.

    The exit status is ``_KILLED_AT`` plus the failing test's position (255 if
    that does not fit), so the parent can try that test first on later mutants.
    """

    class _FirstFailure:
        def __init__(self) -> None:
            self.position = 0

        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.failed:
                os._exit(min(_KILLED_AT + self.position, 255))

    code = 3
    try:
        _silence()
        watch = _FirstFailure()
        items[0].config.pluginmanager.register(watch)
        for position, item in enumerate(items):
            watch.position = position
            following = items[position + 1] if position + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=following)
        code = 0
    finally:
        os._exit(code)


def start_mutant(
    module: types.ModuleType, tree: ast.Module, mutant: Mutant, items: list[Any]
) -> int:
    """Fork a child that applies ``mutant`` and runs ``items``; it exits 0 if it survived."""
    pid = os.fork()
    if pid == 0:  # the child: mutate, test, report by exit status
        try:
            if mutant is not _BASELINE:
                install(module, mutated_namespace(module, tree, mutant))
        except BaseException:
            os._exit(2)  # the mutant does not even load: killed
        _run_items(items)
    return pid


@dataclass
class _Outcome:
    survivors: list[Mutant]
    seconds: dict[Mutant, float]  # how long each mutant took to be decided


def run_all(
    module: types.ModuleType,
    tree: ast.Module,
    mutants: list[Mutant],
    items: list[Any],
    jobs: int,
    timeout: float,
) -> _Outcome:
    """Run every mutant, ``jobs`` at a time.

    The tests that killed recent mutants run first for the next ones: mutants
    of one function tend to die on the same few tests.
    """
    waiting = list(reversed(mutants))
    running: dict[int, tuple[Mutant, float, list[Any]]] = {}
    outcome = _Outcome([], {})
    killers: list[Any] = []  # latest first
    while waiting or running:
        while waiting and len(running) < jobs:
            mutant = waiting.pop()
            order = killers + [item for item in items if item not in killers]
            pid = start_mutant(module, tree, mutant, order)
            running[pid] = (mutant, time.monotonic(), order)
        for pid, (mutant, began, order) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.monotonic() - began
            if done:
                del running[pid]
                outcome.seconds[mutant] = elapsed
                code = os.waitstatus_to_exitcode(status)
                if code == 0:
                    outcome.survivors.append(mutant)
                elif _KILLED_AT <= code < 255:
                    killer = order[code - _KILLED_AT]
                    killers = [killer, *(k for k in killers if k is not killer)][:_KILLERS]
            elif elapsed > timeout:  # it loops: killed
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                del running[pid]
                outcome.seconds[mutant] = elapsed
        time.sleep(0.002)
    outcome.survivors.sort(key=lambda m: (m.index, m.variant))
    return outcome


def _selected(items: list[Any], tests: list[str]) -> list[Any]:
    """The collected items that ``tests`` (files or node ids) name, examples first.

    Most mutants die on an example test, cheaply; property tests run last.
    """
    chosen = [
        item
        for item in items
        if any(item.nodeid == t or item.nodeid.startswith(t.rstrip("/") + "::") for t in tests)
    ]
    chosen.sort(key=lambda item: hasattr(getattr(item, "obj", None), "hypothesis"))
    return chosen


class _Mutate:
    """A pytest plugin: the tests are collected once, then each mutant runs them in a fork.

    Collecting (and importing) once, and forking a process that has done it,
    makes a mutant cost only the tests it runs until the first failure.
    """

    def __init__(self, modules: list[str], jobs: int) -> None:
        self.modules, self.jobs = modules, jobs
        self.report: list[str] = []
        self.failures = 0

    def pytest_runtestloop(self, session: Any) -> bool:
        # The unmutated run's seconds (None: it failed), per selection of tests.
        baselines: dict[tuple[str, ...], float | None] = {}
        for name in self.modules:
            began = time.monotonic()
            items = _selected(session.items, TARGETS[name])
            module = importlib.import_module(name)
            source = Path(module.__file__ or "").read_text()
            lines = source.splitlines()
            tree = ast.parse(source)
            selection = tuple(item.nodeid for item in items)
            if selection not in baselines:
                baseline = run_all(module, tree, [_BASELINE], items, 1, BASELINE_TIMEOUT)
                passed = bool(items) and baseline.survivors == [_BASELINE]
                baselines[selection] = baseline.seconds[_BASELINE] if passed else None
            base_seconds = baselines[selection]
            if base_seconds is None:
                self.report.append(f"{name}: the unmutated tests fail; fix them first")
                self.failures += 1
                continue
            mutants = enumerate_mutants(name, tree)
            # Known equivalents are not run: nothing can kill them, and each would
            # cost a full run of the tests.
            keys = {m: m.key(lines) for m in mutants}
            to_run = [m for m in mutants if keys[m] not in EQUIVALENT]
            timeout = max(MIN_TIMEOUT, TIMEOUT_FACTOR * base_seconds)
            outcome = run_all(module, tree, to_run, items, self.jobs, timeout)
            survivors = outcome.survivors
            equivalent = len(mutants) - len(to_run)
            self.report.append(
                f"{name}: {len(mutants)} mutants ({equivalent} known equivalent), "
                f"{len(survivors)} surviving ({time.monotonic() - began:.0f}s)"
            )
            for mutant in survivors:
                _, line, description = keys[mutant]
                self.report.append(f"  SURVIVED line {mutant.line}: {description}    | {line}")
            for mutant, seconds in outcome.seconds.items():
                if seconds > SLOW:
                    _, line, description = keys[mutant]
                    self.report.append(
                        f"  slow ({seconds:.0f}s) line {mutant.line}: {description}    | {line}"
                    )
            stale = [k for k in EQUIVALENT if k[0] == name and k not in keys.values()]
            for _, line, description in stale:  # the code changed: re-examine the entry
                self.report.append(f"  STALE EQUIVALENT entry: {description}    | {line}")
            self.failures += len(survivors) + len(stale)
        return True  # the tests themselves ran only in the children


#: No mutation at all: the tests must pass on the code as it is.
_BASELINE = Mutant("", -1, 0, 0, "baseline")


def main(argv: list[str] | None = None) -> int:
    import pytest
    from hypothesis import settings

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(TARGETS), help="modules to mutate")
    parser.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1))
    options = parser.parse_args(argv)
    unknown = [name for name in options.modules if name not in TARGETS]
    if unknown:
        parser.error(f"not a mutation target: {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    os.chdir(ROOT)
    # Deterministic, and lighter than the suite's default: a mutant is usually
    # killed by the first few examples, and a survivor is reported, not hidden.
    settings.register_profile(
        "mutation", database=None, derandomize=True, deadline=None, max_examples=50
    )
    settings.load_profile("mutation")
    tests = sorted({test for name in options.modules for test in TARGETS[name]})
    files = sorted({test.split("::")[0] for test in tests})
    plugin = _Mutate(options.modules, options.jobs)
    started = time.monotonic()
    arguments = ["-q", "-s", "-p", "no:cacheprovider", "-o", "timeout=0"]
    # hypothesis was imported before pytest, which warns that it cannot rewrite its asserts.
    arguments += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    outcome = pytest.main([*files, *arguments], plugins=[plugin])
    print("\n".join(plugin.report))
    print(f"mutation testing took {time.monotonic() - started:.0f}s")
    if outcome not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) or not plugin.report:
        print(f"pytest could not collect the tests (exit {outcome})")
        return 1
    return 1 if plugin.failures else 0


if __name__ == "__main__":
    sys.exit(main())
