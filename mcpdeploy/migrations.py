"""Expand/contract migrations seen from the operator machine: what an image would apply to
the stack's database, and which of its contract migrations a release may apply.

The service marks each migration ``expand`` (additive: safe while the previous release
runs) or ``contract`` (removes what an older release may still use) and answers
``mcp-service migrate --plan`` without changing anything (app_image/README.md, "Expand and
contract"). :func:`migration_plan` runs that on an app host the way ``roles/app`` runs
``migrate``; :func:`contract_violations` is the rule a release applies to the answer.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mcpdeploy.fleet import Fleet, FleetError

# As roles/app/__init__.py names them (tests/unit/test_migrations.py keeps them equal); the
# installed CLI cannot import roles/, which lives beside deploy.py, not in the package.
RUNTIME_ENV_FILE = "/etc/mcp-service/env"
MIGRATE_ENV_FILE = "/etc/mcp-service/migrate.env"
CA_FILE = "/etc/mcp-service/ca.crt"
CONTAINER_CA_FILE = "/etc/mcpdeploy/ca.crt"
CONTAINER_USER = "10001:10001"
PHASES = ("expand", "contract")
# A first run on a host pulls the image (about 300 MB).
PLAN_TIMEOUT_SECONDS = 600


class MigrationPlanError(Exception):
    """``migrate --plan`` gave no plan; the message names the host, the image and why."""


class PlanNotSupported(MigrationPlanError):
    """The image predates ``migrate --plan`` (and migration phases)."""


@dataclass(frozen=True)
class PendingMigration:
    """A migration the database has not applied yet, and its phase."""

    name: str
    phase: str


@dataclass(frozen=True)
class Plan:
    """What ``migrate`` would do with one image: names the database records as applied
    (all of them, including any the image does not ship) and the image's pending ones."""

    applied: tuple[str, ...]
    pending: tuple[PendingMigration, ...]

    @property
    def migrations(self) -> frozenset[str]:
        """The image's migrations as far as the database tells: applied and pending."""
        return frozenset(self.applied) | {m.name for m in self.pending}

    def pending_in(self, phase: str) -> list[str]:
        """Names of the pending migrations of ``phase``, in the order they would run."""
        return [m.name for m in self.pending if m.phase == phase]

    @classmethod
    def from_output(cls, text: str) -> Plan:
        """Parse ``migrate --plan``'s output (its last line is the JSON document)."""
        lines = text.strip().splitlines()
        try:
            document = json.loads(lines[-1])
            plan = cls(
                applied=tuple(str(name) for name in document["applied"]),
                pending=tuple(
                    PendingMigration(str(m["name"]), str(m["phase"])) for m in document["pending"]
                ),
            )
        except (IndexError, ValueError, KeyError, TypeError):
            raise MigrationPlanError(
                f"`migrate --plan` printed no plan: {' / '.join(lines[-3:]) or '(nothing)'}"
            ) from None
        unknown = {m.phase for m in plan.pending} - set(PHASES)
        if unknown:
            raise MigrationPlanError(
                f"`migrate --plan` reported unknown phase(s) {sorted(unknown)}"
            )
        return plan


def one_shot_command(
    image: str, env_file: str, args: Sequence[str], entrypoint: str | None = None
) -> str:
    """The remote shell command that runs ``image`` once, as ``roles/app`` runs ``migrate``:
    read-only root, no capabilities, the service's user, ``env_file`` as its environment and
    the stack CA mounted where the connection URLs expect it (when the host has one)."""
    entry = f"--entrypoint {shlex.quote(entrypoint)} " if entrypoint else ""
    return (
        f"ca=; if [ -f {CA_FILE} ]; then ca='--volume {CA_FILE}:{CONTAINER_CA_FILE}:ro'; fi; "
        "exec docker run --rm --read-only --tmpfs /tmp:rw,noexec,nosuid,size=16m "
        f"--user {CONTAINER_USER} --cap-drop ALL --security-opt no-new-privileges $ca "
        f"--env-file {env_file} {entry}{shlex.quote(image)} {shlex.join(args)}"
    )


def migration_plan(fleet: Fleet, host: str, image: str) -> Plan:
    """``image``'s plan against the stack's database, asked from app ``host`` (which pulls
    ``image`` if it lacks it) with the schema owner's environment; changes nothing."""
    command = one_shot_command(image, MIGRATE_ENV_FILE, ["migrate", "--plan"])
    try:
        result = fleet.run(host, command, timeout=PLAN_TIMEOUT_SECONDS, check=False)
    except FleetError as exc:
        raise MigrationPlanError(str(exc)) from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        if "unrecognized arguments: --plan" in output:
            raise PlanNotSupported(f"{host}: {image} has no `migrate --plan` (an older image)")
        tail = " / ".join(output.splitlines()[-3:]) or f"exit {result.returncode}"
        raise MigrationPlanError(f"{host}: `migrate --plan` with {image} failed: {tail}")
    try:
        return Plan.from_output(result.stdout)
    except MigrationPlanError as exc:
        raise MigrationPlanError(f"{host}: {image}: {exc}") from None


def contract_violations(
    plan_new_image: Plan, migrations_in_active_image: Collection[str]
) -> list[str]:
    """Why this release may not apply some of its contract migrations (empty: it may).

    A contract migration removes what older code may use. It may only be applied by a
    release if it already shipped, pending, in the image the active color runs: then the
    code that stopped using what it removes was released before, and that image (the
    rollback target) does not need it. One that is new in this release is refused.
    """
    active = set(migrations_in_active_image)
    return [
        f"{name} is a contract migration new in this release: the active color's image (the "
        f"rollback target) does not ship it and may still use what it removes. Release the "
        f"code that stops using it first, with {name} left pending, and let the next release "
        f"apply it"
        for name in plan_new_image.pending_in("contract")
        if name not in active
    ]
