"""Every component's Args in infra/components takes its fields by name only: a field
reordered in a class can never miswire a call (infra/__main__.py passes 12 values to some)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import sys
from types import ModuleType

import pytest
from pulumi_harness import INFRA


@pytest.fixture(scope="module")
def components() -> list[ModuleType]:
    sys.path.insert(0, str(INFRA))
    try:
        package = importlib.import_module("components")
        return [
            importlib.import_module(f"components.{module.name}")
            for module in pkgutil.iter_modules(package.__path__)
        ]
    finally:
        sys.path.remove(str(INFRA))


def test_every_args_class_is_a_frozen_keyword_only_dataclass(components):
    found = {
        name: cls
        for module in components
        for name, cls in vars(module).items()
        if name.endswith("Args") and isinstance(cls, type) and cls.__module__ == module.__name__
    }
    assert len(found) == 12, sorted(found)
    for name, cls in found.items():
        assert dataclasses.is_dataclass(cls), name
        assert cls.__dataclass_params__.frozen, name
        assert all(field.kw_only for field in dataclasses.fields(cls)), name


def test_positional_args_are_refused(components):
    hosts = next(module for module in components if module.__name__ == "components.hosts")
    with pytest.raises(TypeError):
        hosts.HostsArgs(*range(12))
