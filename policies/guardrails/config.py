"""Policy configuration: each setting's schema and its safe default live together.

``pulumi preview --policy-pack-config FILE`` hands a policy the properties set for it;
a policy reads every setting through :func:`setting`, so an unset one takes the default
written in the schema (the CLI shows the same schema to whoever writes the file).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import PolicyConfigSchema, ResourceValidationArgs, StackValidationArgs


def schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    """A config schema; every property must carry the ``default`` policies fall back to."""
    for key, prop in properties.items():
        if "default" not in prop:
            raise ValueError(f"policy setting {key!r} needs a default")
    return PolicyConfigSchema(properties=properties)


def setting(
    args: ResourceValidationArgs | StackValidationArgs, config: PolicyConfigSchema, key: str
) -> Any:
    """The configured value of ``key``, else the schema's default."""
    return args.get_config().get(key, config.properties[key]["default"])


def string_list(description: str, default: list[str]) -> dict[str, Any]:
    """Schema of a list of strings."""
    return {"type": "array", "items": {"type": "string"}, "description": description,
            "default": default}  # fmt: skip
