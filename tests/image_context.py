"""The source tree deploy/Dockerfile builds its wheel from: the files .dockerignore lets into the build
context, placed by the build stage's COPY instructions. A test that builds the wheel from this tree builds
what the image builds (no Docker daemon is needed to find a file the image never receives)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


Rules = list[tuple[bool, re.Pattern[str]]]


def ignore_globs(text: str) -> list[tuple[bool, str]]:
    """.dockerignore's lines as (excludes, glob), in order: the last rule that matches a path decides."""
    globs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            globs.append((not line.startswith("!"), line.lstrip("!").strip("/")))
    return globs


def _pattern(glob: str) -> re.Pattern[str]:
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
    return re.compile(out)


def ignored(path: str, rules: Rules) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the context: a rule matching the path or one of
    its parent directories applies to it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            verdict = excludes
    return verdict


def build_context(root: Path = ROOT) -> list[str]:
    """Every file (relative path) the image's build context holds."""
    globs = ignore_globs((root / ".dockerignore").read_text())
    rules = [(excludes, _pattern(glob)) for excludes, glob in globs]
    kept = [glob for excludes, glob in globs if not excludes]
    found = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory).relative_to(root).as_posix().removeprefix(".")
        # A left-out directory is walked only when a "!" rule may take back something inside it.
        subdirs[:] = [
            d
            for d in subdirs
            if not ignored(f"{here}/{d}".lstrip("/"), rules)
            or any(g.startswith(f"{here}/{d}/".lstrip("/")) or g.startswith("*") for g in kept)
        ]
        found += [rel for f in files if not ignored(rel := f"{here}/{f}".lstrip("/"), rules)]
    return sorted(found)


def build_stage_copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """The first stage's ``COPY sources... dest`` instructions (those from the context, not ``--from``)."""
    copies = []
    for line in dockerfile.split("\nFROM ", 2)[1].splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            *sources, dest = words[1:]
            copies.append((sources, dest))
    return copies


def image_source_tree(target: Path, root: Path = ROOT) -> Path:
    """Lay out in ``target`` what the build stage's WORKDIR holds when it builds the wheel."""
    context = set(build_context(root))
    for sources, dest in build_stage_copies(DOCKERFILE.read_text()):
        for source in sources:
            inside = sorted(p for p in context if p == source or p.startswith(f"{source.rstrip('/')}/"))
            assert inside, f"deploy/Dockerfile copies {source}, which .dockerignore keeps out of the context"
            for rel in inside:
                if rel == source:  # a file: into the directory dest names, or to dest
                    to = target / dest / Path(rel).name if dest.endswith("/") else target / dest
                else:  # a directory's contents, into dest
                    to = target / dest / Path(rel).relative_to(source)
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, to)
    return target
