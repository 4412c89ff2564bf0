"""Named compression plans shipped with Airfoil (YAML files in this folder)."""
from __future__ import annotations

from pathlib import Path

from airfoil.compiler.compress import PlanError

__all__ = ["plan_path", "PLAN_NAMES"]

_HERE = Path(__file__).parent
PLAN_NAMES = tuple(sorted(p.stem for p in _HERE.glob("*.yaml")))


def plan_path(name_or_path: str) -> Path:
    """A shipped plan by name (``default``, ...) or a path to a YAML plan."""
    if name_or_path in PLAN_NAMES:
        return _HERE / f"{name_or_path}.yaml"
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise PlanError(f"--plan {name_or_path}: no such file")
        return p
    raise PlanError(f"--plan {name_or_path!r}: not a shipped plan {list(PLAN_NAMES)} nor a .yaml file")
