"""The guide's security intent as CrossGuard policies, one module per resource family.

:data:`POLICIES` is the whole pack; ``policies/__main__.py`` serves it to the Pulumi CLI
and ``tests/policies`` runs it over the mocked stack.
"""

from __future__ import annotations

from pulumi_policy import Policy

from . import (
    blue_green,
    buckets,
    cache,
    database,
    instances,
    load_balancer,
    registry,
    security_groups,
    tagging,
)

PACK_NAME = "mcpdeploy-guardrails"

POLICIES: list[Policy] = [
    *database.POLICIES,
    *cache.POLICIES,
    *security_groups.POLICIES,
    *load_balancer.POLICIES,
    *instances.POLICIES,
    *buckets.POLICIES,
    *registry.POLICIES,
    *tagging.POLICIES,
    *blue_green.POLICIES,
]
