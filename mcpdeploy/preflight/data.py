"""From an app host, as the service: PostgreSQL 13+ and Redis 6+ with the runtime
credentials, and the migrations the release's image would apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcpdeploy.fleet import Fleet, FleetError
from mcpdeploy.migrations import (
    RUNTIME_ENV_FILE,
    MigrationPlanError,
    Plan,
    PlanNotSupported,
    contract_violations,
    migration_plan,
    one_shot_command,
)
from mcpdeploy.preflight.check import Check

MIN_POSTGRES_MAJOR = 13  # the guide: PostgreSQL 13+
MIN_REDIS = (6, 0)  # the guide: Redis 6.0+
SERVICE_CONTAINER = "mcp-service"
PROBE = Path(__file__).with_name("dependency_probe.py")


def dependency_checks(answer: dict[str, Any], host: str) -> list[Check]:
    """The ``postgres`` and ``redis`` checks from the probe's answer on ``host``."""
    fix = (
        f"look at the data host (`systemctl status postgresql redis-server`) and at {host}'s "
        f"{RUNTIME_ENV_FILE}, which the deploy writes from the stack's secrets"
    )
    checks = []
    pg = answer.get("postgres") or {"error": "no answer"}
    if "error" in pg:
        checks.append(Check("postgres", "fail", f"from {host}: {pg['error']}", fix))
    elif int(pg["number"]) < MIN_POSTGRES_MAJOR * 10000:
        checks.append(
            Check(
                "postgres",
                "fail",
                f"PostgreSQL {pg['version']}; the guide needs {MIN_POSTGRES_MAJOR} or later",
                f"upgrade PostgreSQL to {MIN_POSTGRES_MAJOR} or later",
            )
        )
    else:
        seen = f"PostgreSQL {pg['version']} as {pg['user']} from {host}"
        checks.append(Check("postgres", "pass", f"{seen}, {'TLS' if pg['tls'] else 'no TLS'}"))
    rd = answer.get("redis") or {"error": "no answer"}
    if "error" in rd:
        checks.append(Check("redis", "fail", f"from {host}: {rd['error']}", fix))
    elif tuple(int(part) for part in str(rd["version"]).split(".")[:2]) < MIN_REDIS:
        checks.append(
            Check(
                "redis",
                "fail",
                f"Redis {rd['version']}; the guide needs 6.0 or later",
                "upgrade Redis to 6.0 or later",
            )
        )
    else:
        seen = f"Redis {rd['version']} as {rd['user']} from {host}"
        checks.append(Check("redis", "pass", f"{seen}, {'TLS' if rd['tls'] else 'no TLS'}"))
    return checks


# Connections the service's pools must leave free: a migration, a backup (pg_dump), an
# ops check, an operator's psql.
SPARE_CONNECTIONS = 5


def connections_check(postgres: dict[str, Any], per_host: int, hosts: int) -> Check:
    """The connection budget: ``per_host`` (pool size x workers) on each of ``hosts`` (every
    app host of both colors: they run at once) against what the server admits
    (``max_connections`` less the superuser's reserve), with :data:`SPARE_CONNECTIONS`."""
    limit = int(postgres["max_connections"]) - int(postgres["reserved_connections"])
    need = per_host * hosts
    seen = (
        f"the pools need up to {need} ({per_host} on each of {hosts} app hosts); "
        f"PostgreSQL admits {limit} (max_connections {postgres['max_connections']})"
    )
    fix = (
        "lower app.dbPoolSize or app.workers, or raise data.postgres.maxConnections "
        "(AWS: a larger RDS instance class, or a parameter group)"
    )
    if need > limit:
        return Check("connections", "fail", seen, fix)
    if need + SPARE_CONNECTIONS > limit:
        return Check("connections", "warn", f"{seen}: under {SPARE_CONNECTIONS} to spare", fix)
    return Check("connections", "pass", seen)


def probe_dependencies(fleet: Fleet, host: str, image: str) -> tuple[list[Check], dict[str, Any]]:
    """PostgreSQL and Redis from app ``host``: ``image`` run once with the service's runtime
    environment file and CA, as the service connects (:mod:`dependency_probe`). Returns
    the checks and what PostgreSQL answered (its limits feed :func:`connections_check`)."""
    command = one_shot_command(
        image, RUNTIME_ENV_FILE, ["-c", PROBE.read_text()], entrypoint="python"
    )
    try:
        result = fleet.run(host, command, timeout=120, check=False)
    except FleetError as exc:
        answer = _no_answer(str(exc))
    else:
        try:
            answer = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = _no_answer(" / ".join(result.stderr.strip().splitlines()[-2:]))
    return dependency_checks(answer, host), answer.get("postgres") or {}


def _no_answer(why: str) -> dict[str, Any]:
    return {name: {"error": f"the probe did not run: {why}"} for name in ("postgres", "redis")}


def migrations_check(
    new: Plan, active: Plan | None, active_note: str, defer_contract: bool
) -> Check:
    """Pending migrations of the release's image, and whether its contract ones may run.

    ``active`` is the plan of the image the active color runs. None: it cannot tell
    (``active_note`` says why), so only what the database has applied counts as shipped
    before, the cautious reading. ``defer_contract``: the release applies expand
    migrations only, so a contract migration new in this image waits (warn, not fail).
    """
    if not new.pending:
        return Check("migrations", "pass", f"none pending ({len(new.applied)} applied)")
    seen = "; ".join(
        f"{len(names)} pending {phase}: {', '.join(names)}"
        for phase, names in (
            ("expand", new.pending_in("expand")),
            ("contract", new.pending_in("contract")),
        )
        if names
    )
    if active_note:
        seen += f" ({active_note})"
    violations = contract_violations(new, active.migrations if active else new.applied)
    if not violations:
        return Check("migrations", "pass", seen)
    if defer_contract:
        return Check(
            "migrations",
            "warn",
            f"{seen}. Deferred to the next release: {' '.join(violations)}",
            "none now: this release applies expand migrations only",
        )
    return Check(
        "migrations",
        "fail",
        f"{seen}. {' '.join(violations)}",
        "release this image with expand migrations only (`mcp-service migrate --phase "
        "expand`) so its new contract migrations stay pending until the next release; a "
        "plain deploy runs `migrate` for every phase and would apply them now",
    )


def plan_migrations(
    fleet: Fleet, new_host: str, image: str, active_host: str | None, defer_contract: bool
) -> Check:
    """``image``'s plan asked on ``new_host``; what the active color's image ships asked on
    ``active_host`` with the image it runs there."""
    try:
        new = migration_plan(fleet, new_host, image)
    except PlanNotSupported as exc:
        return Check(
            "migrations",
            "fail",
            str(exc),
            "the image must answer `mcp-service migrate --plan` (app_image/README.md)",
        )
    except MigrationPlanError as exc:
        return Check(
            "migrations",
            "fail",
            str(exc),
            "the error names the cause: a pull that failed (see the image check), the "
            "database (see the postgres check), or an applied migration edited since (add a "
            "new one instead)",
        )
    cautious = "only applied ones count as shipped"
    current = fleet.running_image(active_host) if active_host else None
    active = None
    if active_host is None:
        note = f"no host of the active color answered: {cautious}"
    elif current is None:
        note = f"{active_host} runs no service: {cautious}"
    else:
        try:
            active, note = migration_plan(fleet, active_host, current), ""
        except PlanNotSupported:
            note = f"the active color's image predates phases: {cautious}"
        except MigrationPlanError as exc:
            note = f"the active color's plan failed ({exc}): {cautious}"
    return migrations_check(new, active, note, defer_contract)
