#!/usr/bin/python3
"""The guide's Database Recovery, safely: mcp-restore [--force] [--json] FILE [DATABASE]

1. FILE must match FILE.sha256 when that exists (a mismatch is refused);
2. a database that holds rows is only replaced with --force, and says how many it holds;
3. a safety backup is taken first (a run of mcp-backup.service), and named;
4. the dump is restored in one transaction that also checks, before it commits, that every
   table holds as many rows as the dump has for it: either the database is the backup, or
   nothing changed. Objects are dropped and recreated (--clean), owners and grants as they
   were at backup time, so the service's runtime role keeps its grants.

Exit codes: 0 restored, 1 failed (nothing restored), 2 usage or unreadable FILE, 3 refused
(the database holds rows and --force was not given). With --json the report is one JSON
object on stdout (also on refusal and failure); progress goes to stderr either way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

BACKUP_DIR = Path("/var/backups/mcpdeploy")
BACKUP_UNIT = "mcp-backup.service"
DEFAULT_DATABASE = "railspress_production"
REFUSED = 3
# As postgres over the local socket (peer authentication), stopping at the first error.
PSQL = ("runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1")
# Exact row count of every ordinary table (partitions counted as their own tables, like
# pg_dump dumps them), named as pg_dump names them in its COPY lines.
ROW_COUNTS = r"""
SELECT format('%I.%I', n.nspname, c.relname),
       (xpath('/row/c/text()', query_to_xml(
           format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')
       ))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
ORDER BY 1
"""
COPY_LINE = re.compile(rb"^COPY (.+?)(?: \(.*\))? FROM stdin;$")
END_OF_COPY = b"\\.\n"


class RestoreError(Exception):
    """The restore did not happen; the message says why, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def checksum(path: Path) -> str | None:
    """FILE's sha256 when FILE.sha256 exists and matches, None without one; raise otherwise."""
    recorded = Path(f"{path}.sha256")
    if not recorded.exists():
        return None
    expected = recorded.read_text().split()[0]
    digest = hashlib.sha256()
    with path.open("rb") as dump:
        for block in iter(lambda: dump.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise RestoreError(f"{path} does not match {recorded}; refusing to restore")
    return expected


def psql(database: str, sql: str) -> str:
    """``sql`` as postgres over the local socket; unaligned, tuples only."""
    result = subprocess.run(
        [*PSQL, "-At", "-F", "|", "-d", database, "-c", sql],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    if result.returncode != 0:
        raise RestoreError(f"psql on {database}: {result.stderr.strip()}")
    return result.stdout


def table_rows(database: str) -> dict[str, int]:
    """{schema.table: rows} of every table in ``database``."""
    lines = psql(database, ROW_COUNTS).splitlines()
    return {name: int(count) for name, count in (line.rsplit("|", 1) for line in lines)}


def safety_backup() -> Path:
    """Run the backup unit now and return the dump it wrote."""
    before = set(BACKUP_DIR.glob("*.dump"))
    result = subprocess.run(
        ["systemctl", "start", BACKUP_UNIT], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RestoreError(
            f"the safety backup failed ({BACKUP_UNIT}: journalctl -u {BACKUP_UNIT}); "
            "nothing was restored"
        )
    new = sorted(set(BACKUP_DIR.glob("*.dump")) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RestoreError(f"{BACKUP_UNIT} ran but wrote no new dump; nothing was restored")
    return new[-1]


def copy_counting(lines: Iterable[bytes], out: IO[bytes]) -> dict[str, int]:
    """Write ``lines`` (pg_restore's SQL) to ``out``; return the rows of each COPY block."""
    rows: dict[str, int] = {}
    table: str | None = None
    for line in lines:
        out.write(line)
        if table is not None:
            if line == END_OF_COPY:
                table = None
            else:
                rows[table] += 1
            continue
        match = COPY_LINE.match(line.rstrip(b"\n"))
        if match:
            table = match[1].decode()
            rows[table] = 0
    return rows


def verification_sql(rows: dict[str, int]) -> str:
    """A statement that fails (rolling the restore back) unless each table has its rows."""
    # Table names are pg_dump's own, already quoted where needed; counts are integers.
    checks = "".join(
        f"  IF (SELECT count(*) FROM {table}) <> {count} THEN\n"  # noqa: S608
        f"    RAISE EXCEPTION 'mcp-restore: % has % rows after the restore, the backup has %',"
        f" {quote_literal(table)}, (SELECT count(*) FROM {table}), {count};\n"
        "  END IF;\n"
        for table, count in rows.items()
    )
    return f"DO $mcp_restore$\nBEGIN\n{checks}END\n$mcp_restore$;\n"


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def restore(dump: IO[bytes], database: str) -> dict[str, int]:
    """Restore ``dump`` into ``database`` in one transaction, row counts checked inside it.

    pg_restore writes the SQL; psql runs it after BEGIN with ON_ERROR_STOP, and COMMIT is
    sent only after the whole script and the verification: if anything fails, the
    connection closes with the transaction open and PostgreSQL rolls it back.
    """
    with tempfile.TemporaryFile() as reader_errors, tempfile.TemporaryFile() as errors:
        reader = subprocess.Popen(
            ["pg_restore", "--clean", "--if-exists", "--file=-"],
            stdin=dump,
            stdout=subprocess.PIPE,
            stderr=reader_errors,
        )
        session = subprocess.Popen(
            [*PSQL, "-d", database, "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            cwd="/",
        )
        assert reader.stdout is not None and session.stdin is not None
        try:
            session.stdin.write(b"BEGIN;\n")
            rows = copy_counting(reader.stdout, session.stdin)
            if reader.wait() != 0:
                session.kill()
                reader_errors.seek(0)
                message = reader_errors.read().decode(errors="replace").strip()
                raise RestoreError(f"pg_restore cannot read the dump, nothing changed: {message}")
            session.stdin.write(verification_sql(rows).encode())
            session.stdin.write(b"COMMIT;\n")
            session.stdin.close()
        except BrokenPipeError:
            # psql stopped at an error: its message is below.
            reader.kill()
            rows = {}
        finally:
            reader.wait()
        if session.wait() != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            raise RestoreError(f"the restore was rolled back, nothing changed: {message}")
    return rows


def total(rows: dict[str, int]) -> tuple[int, int]:
    """(rows, tables holding rows)."""
    return sum(rows.values()), sum(1 for count in rows.values() if count)


def run(args: argparse.Namespace, report: dict[str, Any]) -> int:
    path = Path(args.file)
    try:
        dump = path.open("rb")
    except OSError as exc:
        raise RestoreError(f"cannot read {path}: {exc.strerror}", 2) from None
    with dump:
        digest = checksum(path)
        report["checksum"] = digest
        say(f"checksum ok: {digest}" if digest else f"no {path}.sha256: checksum not checked")
        before = table_rows(args.database)
        rows, tables = total(before)
        report["before"] = {"rows": rows, "tables": tables}
        if rows and not args.force:
            report["refused"] = True
            message = (
                f"{args.database} holds {rows} rows in {tables} tables; restoring replaces "
                "them: run again with --force (a safety backup is taken first)"
            )
            report["error"] = message
            say(f"mcp-restore: {message}")
            return REFUSED
        say(f"{args.database} holds {rows} rows in {tables} tables")
        # The dump stays open: the backup's retention pruning cannot take it away now.
        safety = safety_backup()
        report["safety_backup"] = str(safety)
        say(f"safety backup: {safety}")
        restored = restore(dump, args.database)
    report["restored"] = True
    report["tables"] = restored
    report["rows"] = sum(restored.values())
    say(f"restored {path} into {args.database}; row counts verified before the commit:")
    for table, count in restored.items():
        say(f"  {table:<32} {count:>10}")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mcp-restore", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="replace a database holding rows")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    parser.add_argument("file", help="a pg_dump custom-format backup")
    parser.add_argument("database", nargs="?", default=DEFAULT_DATABASE)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    report: dict[str, Any] = {"file": args.file, "database": args.database, "restored": False}
    try:
        code = run(args, report)
    except RestoreError as exc:
        report["error"] = str(exc)
        say(f"mcp-restore: {exc}")
        code = exc.code
    if args.json:
        print(json.dumps(report))
    return code


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main(sys.argv[1:]))
