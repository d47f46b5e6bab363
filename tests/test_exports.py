"""The public namespace is complete, sorted and presented as ``quiv``."""

from __future__ import annotations

import inspect

import quiv

#: quiv 0.x's public modules, kept as attributes but not star-exported (see test_compat).
PUBLIC_MODULES = {"config", "exceptions", "models"}


def test_all_is_sorted_and_complete() -> None:
    assert list(quiv.__all__) == sorted(quiv.__all__)
    # quiv.web (the optional dashboard) becomes an attribute once something imports it.
    public = {name for name in dir(quiv) if not name.startswith("_")} - {"web"}
    assert public == set(quiv.__all__) - {"__version__"} | PUBLIC_MODULES
    assert all(inspect.ismodule(getattr(quiv, name)) for name in PUBLIC_MODULES)


def test_exported_objects_claim_the_package() -> None:
    for name in quiv.__all__:
        obj = getattr(quiv, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "quiv", name


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("quiv").joinpath("py.typed").is_file()
