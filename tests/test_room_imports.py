"""room/ imports in one direction (cli -> rehearse -> start -> hub/seats/tenant/kernel): no module of
labkit.room imports, at the top or inside a function, one that leads back to it."""
from __future__ import annotations

import ast
from pathlib import Path

ROOM = Path(__file__).resolve().parent.parent / "labkit" / "room"


def room_imports() -> dict[str, set[str]]:
    """Each room module's imports of other room modules (`from labkit.room import x` counts as x)."""
    names = {f.stem for f in ROOM.glob("*.py") if f.stem != "__init__"}
    edges = {}
    for name in names:
        found = set()
        for node in ast.walk(ast.parse((ROOM / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "labkit.room":
                found |= {a.name for a in node.names} & names
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit.room."):
                found.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("labkit.room.")}
        edges[name] = found - {name}
    return edges


def reaches(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(edges[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += edges.get(m, ())
    return seen


def test_no_room_module_imports_back():
    edges = room_imports()
    assert edges["cli"] >= {"rehearse", "start"}, edges["cli"]  # the reader checks what it thinks it checks
    circles = sorted(m for m in edges if m in reaches(edges, m))
    assert circles == [], f"room modules on an import circle: {circles} ({edges})"


def test_the_direction_is_cli_rehearse_start():
    edges = room_imports()
    assert "start" in edges["rehearse"] and "cli" not in reaches(edges, "rehearse")
