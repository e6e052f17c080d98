"""docs/settings.md documents every key of the schema, and only those."""

from __future__ import annotations

import re

from pydantic import BaseModel

from mcpdeploy.settings import PACKAGE_ROOT, Settings


def schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        alias = field.alias or name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= schema_keys(annotation, f"{prefix}{alias}.")
        else:
            keys.add(prefix + alias)
    return keys


def test_every_setting_is_documented_and_no_stale_key_remains():
    text = (PACKAGE_ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \|", text, flags=re.MULTILINE))
    assert documented == schema_keys(Settings)
