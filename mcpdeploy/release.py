"""``mcpdeploy release``, ``rollback`` and the rolling deploy of one color (docs/releases.md).

A release never touches the active color until the idle one has proved itself. The
steps are the same on every target; what differs between the lab's edge and AWS (where
the lock lives, how a host is judged ready, how the switch and the watch are done) is
the :class:`~mcpdeploy.targets.Target`'s:

1. lock the stack (:mod:`mcpdeploy.releaselog`);
2. resolve the image to a digest; run preflight (:mod:`mcpdeploy.preflight`), stop on a
   failure; record the digest as the idle color's image (``blueImage``/``greenImage`` in
   ``Pulumi.<stack>.yaml``);
3. deploy the idle color's hosts one at a time (the app role pulls, runs the expand
   migrations, restarts and waits for readiness on each);
4. gates on each idle host: readiness, MCP handshake, ``tools/list`` with a short-lived
   key of the gates' own (AWS: and its ALB target health); then the testinfra suite on
   the idle hosts;
5. switch to the idle color (lab: the edge's flag file, nothing reloaded; AWS:
   ``pulumi up``), then drain the old color: its connections get
   ``release.drainTimeoutSeconds`` to end, its SSE streams are then closed cleanly, and
   what is left is cut; the report counts drained, closed and cut;
6. watch the new color for ``release.watchSeconds``: error rate and p99 against
   ``release.maxErrorPercent`` / ``release.maxP99Seconds``; on a breach, switch back
   automatically; otherwise apply the contract migrations that already shipped in the
   rollback target's image (:func:`contract_phase`);
7. write the audit record and give the lock back (Ctrl-C included).

A failure before step 5 restores the stack file and leaves the active color serving.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mcpdeploy.engine import Progress, no_progress
from mcpdeploy.fleet import Fleet, FleetError
from mcpdeploy.gates import GateResult, gate_key, testinfra_gate
from mcpdeploy.images import ImageError
from mcpdeploy.migrations import (
    MIGRATE_ENV_FILE,
    MigrationPlanError,
    contract_violations,
    migration_plan,
    one_shot_command,
)
from mcpdeploy.preflight import PreflightError, run_preflight
from mcpdeploy.releaselog import Holder, LockError, ReleaseStore, operator
from mcpdeploy.settings import Settings, stack_file
from mcpdeploy.stackfile import StackFileError, edited, validated, write_atomically
from mcpdeploy.switch import SwitchError, other_color, pyinfra, tail
from mcpdeploy.targets import Target


class ReleaseError(Exception):
    """The release stopped; the message names the step, the host and what to look at."""


@dataclass
class Report:
    """What happened, as the audit record keeps it."""

    kind: str
    stack: str
    image: str | None = None
    from_color: str | None = None
    to_color: str | None = None
    previous_image: str | None = None
    user: str = field(default_factory=operator)
    host: str = field(default_factory=socket.gethostname)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    outcome: str = "running"
    failed_step: str | None = None
    error: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    drain: dict[str, int] | None = None
    watch: dict[str, Any] | None = None
    preflight: list[dict[str, Any]] = field(default_factory=list)
    contract: dict[str, Any] | None = None

    def step(self, name: str, started: float, **details: Any) -> None:
        self.steps.append({"step": name, "seconds": round(time.time() - started, 1), **details})

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["duration"] = round((self.finished or time.time()) - self.started, 1)
        return record


def rolling_deploy(fleet: Fleet, color: str, progress: Progress = no_progress) -> list[str]:
    """Deploy ``color``'s hosts one at a time; stop at the first that fails.

    Each host's deploy ends with the app role's readiness wait, so the next host starts
    only once this one serves. Returns the hosts deployed.
    """
    hosts = [h for h in fleet.role("app") if h.color == color]
    if not hosts:
        raise ReleaseError(f"{color} has no app hosts in {fleet.inventory}")
    done = []
    for index, target in enumerate(hosts, 1):
        progress(f"deploying {target.name} ({index}/{len(hosts)} of {color})")
        result = pyinfra(fleet, [target.name])
        if result.returncode != 0:
            raise ReleaseError(
                f"the deploy of {target.name} failed ({tail(result)}); "
                + (f"{', '.join(done)} already run the new image; " if done else "")
                + f"look at 'journalctl -u mcp-service' on {target.name}"
            )
        done.append(target.name)
    return done


def _finish(store: ReleaseStore, holder: Holder, report: Report) -> None:
    """Write ``report`` to the release log, then give the lock back (even if writing fails)."""
    report.finished = time.time()
    try:
        store.record(report.as_record())
    finally:
        store.release(holder)


def deploy_color(target: Target, color: str, progress: Progress = no_progress) -> list[str]:
    """``mcpdeploy deploy --color``: :func:`rolling_deploy` under the release lock, recorded
    in the release log (a repaired idle color is a rollback target again).

    The serving color is refused when it has a single host: its restart would be an outage
    (release to the idle color instead).
    """
    fleet = target.fleet
    settings = validated(stack_file(fleet.stack).read_text(), fleet.stack)
    hosts = [h for h in fleet.role("app") if h.color == color]
    if color == settings.active_color and len(hosts) < 2:
        raise ReleaseError(
            f"{color} serves and has {len(hosts)} host: deploying it would take the service "
            f"down; release to {other_color(color)} instead (mcpdeploy release --image REF)"
        )
    report = Report(
        kind="deploy", stack=fleet.stack, to_color=color, image=settings.image_for(color)
    )
    store = target.store()
    holder = store.acquire(f"deploy {color}", settings.release.lock_timeout_minutes)
    try:
        started = time.time()
        deployed = rolling_deploy(fleet, color, progress)
        report.step("deploy", started, hosts=deployed)
        report.outcome = "kept"
        return deployed
    except (ReleaseError, FleetError) as exc:
        report.outcome = "failed"
        report.failed_step = "deploy"
        report.error = str(exc)
        raise
    finally:
        _finish(store, holder, report)


def run_gates(
    target: Target, settings: Settings, color: str, report: Report, progress: Progress
) -> None:
    """Every gate for ``color``'s hosts; raise naming the first failing gate and host."""
    fleet = target.fleet
    hosts = [h for h in fleet.role("app") if h.color == color]
    progress(f"gates on {color}: readiness, MCP handshake, tools/list ({target.vantage})")
    try:
        with gate_key(fleet, hosts[0]) as key:
            results: list[GateResult] = target.service_gates(hosts, settings.domain, key)
    except (FleetError, ValueError, KeyError) as exc:
        raise ReleaseError(
            f"gate api-key: the gates' API key could not be created on {hosts[0].name} ({exc}); "
            f"look at 'docker logs mcp-service' there"
        ) from None
    if target.host_suite:
        progress(f"gate testinfra: tests/hosts on {', '.join(h.name for h in hosts)}")
        results.append(testinfra_gate(fleet, hosts, fleet.ssh[-1]))
    else:
        progress("gate testinfra: not run here (tests/hosts is written for the lab's topology)")
    report.gates = [asdict(r) for r in results]
    for result in results:
        progress(f"  {'pass' if result.ok else 'FAIL'} {result.gate:<10} {result.host}")
    failed = next((r for r in results if not r.ok), None)
    if failed:
        raise ReleaseError(
            f"gate {failed.gate} failed on {failed.host}: {failed.detail}; "
            f"look at 'journalctl -u mcp-service' and 'docker logs mcp-service' there"
        )


def release(
    target: Target,
    image: str,
    *,
    break_lock: bool = False,
    resolve: Callable[[str, Progress], str] | None = None,
    progress: Progress = no_progress,
) -> Report:
    """Release ``image`` to the idle color and switch to it (module docstring).
    ``resolve`` pins the image by digest (default: the target's own way)."""
    fleet = target.fleet
    resolve = resolve or target.resolve
    path = stack_file(fleet.stack)
    original = path.read_text()
    settings = validated(original, path.name)
    active, idle = settings.active_color, other_color(settings.active_color)
    report = Report(kind="release", stack=fleet.stack, from_color=active, to_color=idle)
    store = target.store()
    holder: Holder = store.acquire(
        f"release to {idle}", settings.release.lock_timeout_minutes, break_lock
    )
    switched = False
    try:
        progress(f"{fleet.stack}: {active} serves; releasing to {idle} (lock taken)")
        # The rollback target is what the active hosts really run, whatever the file says.
        serving = [h for h in fleet.role("app") if h.color == active]
        report.previous_image = fleet.running_image(serving[0].name) if serving else None
        started = time.time()
        try:
            report.image = resolve(image, progress)
        except ImageError as exc:
            raise ReleaseError(f"image {image}: {exc}") from None
        report.step("resolve image", started, image=report.image)

        started = time.time()
        progress("preflight: the guide's pre-deployment checklist")
        try:
            checks = run_preflight(
                fleet.stack, report.image, fleet=fleet, defer_contract=True, progress=progress
            )
        except PreflightError as exc:
            raise ReleaseError(str(exc)) from None
        report.preflight = [asdict(c) for c in checks]
        failed = [c for c in checks if c.status == "fail"]
        report.step("preflight", started)
        if failed:
            report.failed_step = "preflight"
            raise ReleaseError(
                "preflight failed: "
                + "; ".join(f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed)
            )
        new_text = edited(original, {f"{idle}Image": report.image})
        write_atomically(path, new_text)
        progress(f"{idle}Image: {report.image}")

        started = time.time()
        deployed = rolling_deploy(fleet, idle, progress)
        report.step("deploy", started, hosts=deployed)

        started = time.time()
        run_gates(target, settings, idle, report, progress)
        report.step("gates", started)

        started = time.time()
        progress(f"switching to {idle}")
        switched_text = target.switch(path, new_text, idle, progress)
        switched = True
        report.step("switch", started)
        old_hosts = [h for h in fleet.role("app") if h.color == active]
        report.drain = target.drain(old_hosts, settings.release.drain_timeout_seconds)
        progress(
            f"{idle} serves; {active} had {report.drain['open_at_switch']} open "
            f"connection(s): {report.drain['drained']} drained, {report.drain['closed']} "
            f"closed, {report.drain['cut']} cut after {settings.release.drain_timeout_seconds} s"
        )

        started = time.time()
        new_hosts = [h for h in fleet.role("app") if h.color == idle]
        rules = settings.release
        progress(
            f"watching {idle} for {rules.watch_seconds} s (errors ≤ {rules.max_error_percent} %, "
            f"p99 ≤ {rules.max_p99_seconds} s)"
        )
        report.watch = target.watch(new_hosts, settings.domain, rules)
        report.step("watch", started)
        if report.watch["verdict"] != "pass":
            progress(f"watch failed: {report.watch['reason']}; switching back to {active}")
            started = time.time()
            target.switch(path, switched_text, active, progress)
            report.step("switch back", started)
            report.outcome = "rolled-back"
            report.failed_step = "watch"
            report.error = report.watch["reason"]
            progress(f"{active} serves again; {idle} keeps {report.image} for inspection")
        else:
            started = time.time()
            report.contract = contract_phase(
                fleet, new_hosts[0].name, report.image, report.previous_image, progress
            )
            report.step("contract migrations", started)
            report.outcome = "kept"
            progress(f"released: {idle} serves {report.image}")
    except (
        ReleaseError,
        SwitchError,
        FleetError,
        StackFileError,
        LockError,
        MigrationPlanError,
    ) as exc:
        report.outcome = "failed"
        report.failed_step = report.failed_step or _next_step(report)
        report.error = str(exc)
        if not switched:
            write_atomically(path, original)
        raise ReleaseError(_failure_message(report, active, switched)) from None
    except KeyboardInterrupt:
        report.outcome = "interrupted"
        report.failed_step = _next_step(report)
        if not switched:
            write_atomically(path, original)
        raise
    finally:
        _finish(store, holder, report)
    return report


def contract_phase(
    fleet: Fleet, host: str, image: str, previous_image: str | None, progress: Progress
) -> dict[str, Any]:
    """After a kept release: apply the pending contract migrations, or defer them.

    Expand migrations ran with the deploy, before the switch (roles/app runs ``migrate
    --phase expand``). Contract migrations remove what older code may use, so they run only
    now, and only when every pending one already shipped in ``previous_image`` (the
    rollback target): that image's code no longer needs what they remove. A contract
    migration new in this release is deferred to the next one, never applied with the code
    that stops using what it removes.
    """
    plan = migration_plan(fleet, host, image)
    pending = plan.pending_in("contract")
    if not pending:
        return {"applied": [], "deferred": []}
    shipped = migration_plan(fleet, host, previous_image).migrations if previous_image else set()
    deferred = contract_violations(plan, shipped)
    if deferred:
        progress(
            f"contract migrations deferred to the next release ({', '.join(pending)}): "
            + deferred[0]
        )
        return {"applied": [], "deferred": pending, "reason": deferred}
    progress(f"contract migrations: {', '.join(pending)}")
    command = one_shot_command(image, MIGRATE_ENV_FILE, ["migrate", "--phase", "contract"])
    result = fleet.run(host, command, timeout=600, check=False)
    if result.returncode != 0:
        tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ReleaseError(
            f"contract migrations {', '.join(pending)} failed on {host}: {tail}; the release "
            f"stays (its code does not need them); fix the cause, then on {host} run the "
            f"one-shot container as the schema owner: {command}"
        )
    return {"applied": pending, "deferred": []}


_STEPS = (
    "resolve image",
    "preflight",
    "deploy",
    "gates",
    "switch",
    "watch",
    "contract migrations",
)


def _next_step(report: Report) -> str:
    done = {s["step"] for s in report.steps}
    return next((s for s in _STEPS if s not in done), "record")


def _failure_message(report: Report, active: str, switched: bool) -> str:
    if switched:
        return f"{report.failed_step}: {report.error} (the switch happened: check mcpdeploy status)"
    return (
        f"{report.failed_step}: {report.error}. No switch: {active} keeps serving and the "
        f"stack file is unchanged."
    )


def rollback(
    target: Target,
    *,
    break_lock: bool = False,
    resolve: Callable[[str, Progress], str] | None = None,
    progress: Progress = no_progress,
) -> Report:
    """Serve the idle color again: the previous release, still running its image.

    Refused when the idle hosts do not run the image the stack file records for them
    (a failed release left another one there) or do not answer ``/health/mcp``.
    """
    fleet = target.fleet
    resolve = resolve or target.resolve
    path = stack_file(fleet.stack)
    original = path.read_text()
    settings = validated(original, path.name)
    active, back = settings.active_color, other_color(settings.active_color)
    report = Report(
        kind="rollback",
        stack=fleet.stack,
        from_color=active,
        to_color=back,
        image=settings.image_for(back),
        previous_image=settings.image_for(active),
    )
    store = target.store()
    holder = store.acquire(f"rollback to {back}", settings.release.lock_timeout_minutes, break_lock)
    try:
        started = time.time()
        last = next(
            (r for r in reversed(store.last(20)) if r.get("to_color") == back),
            None,
        )
        if last and last.get("outcome") != "kept":
            raise ReleaseError(
                f"the last {last['kind']} to {back} ended {last['outcome']} "
                f"({last.get('error') or 'no detail'}): {back} holds an image that never "
                f"served; release a good image instead (mcpdeploy release --image REF), or "
                f"repair {back} first (mcpdeploy deploy --color {back})"
            )
        try:
            expected = resolve(settings.image_for(back), progress)
        except ImageError as exc:
            raise ReleaseError(f"{back}'s image {settings.image_for(back)}: {exc}") from None
        for host in (h for h in fleet.role("app") if h.color == back):
            running = fleet.running_image(host.name)
            if running != expected:
                raise ReleaseError(
                    f"{host.name} runs {running}, not {expected} as {path.name} records: the "
                    f"previous release is not there to roll back to; release it again instead"
                )
        failing = {
            name: status
            for name, status in target.readiness(settings.domain, back).items()
            if status != 200
        }
        if failing:
            detail = "; ".join(f"{name}: {status}" for name, status in failing.items())
            raise ReleaseError(f"{back} is not ready ({detail}); {active} keeps serving")
        report.step("check", started)
        started = time.time()
        progress(f"switching back to {back} ({expected})")
        target.switch(path, original, back, progress)
        report.step("switch", started)
        old_hosts = [h for h in fleet.role("app") if h.color == active]
        report.drain = target.drain(old_hosts, settings.release.drain_timeout_seconds)
        report.outcome = "kept"
        progress(f"rolled back: {back} serves {expected}")
    except (ReleaseError, SwitchError, FleetError, StackFileError) as exc:
        report.outcome = "failed"
        report.error = str(exc)
        raise ReleaseError(f"rollback refused: {exc}") from None
    finally:
        _finish(store, holder, report)
    return report
