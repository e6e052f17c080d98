"""One item of the checklist, as every check module reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """Pass, warn or fail; what was seen (``detail``) and, unless it passed, the ``fix``."""

    name: str
    status: Status
    detail: str
    fix: str = ""
