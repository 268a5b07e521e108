"""Where ``driftar export --out DIR`` may write: checked before the model is loaded, and again before the
finished bundle replaces DIR. Torch-free.

An export replaces DIR whole (``driftar_core.files.swap_dir``), so DIR must be new, empty, or provably a
driftar export bundle: its ``manifest.json`` parses with ``format == driftar-export/1`` AND every file
in DIR is one the bundle wrote (its ``files`` record; for bundles exported before that record, the
known names and the graphs / engines the manifest lists; the ``ort_trt_cache/`` the TensorRT EP writes
at run time). Anything else is refused, naming the files: an export never removes a file it did not write.
"""
from __future__ import annotations

import os
from pathlib import Path

from driftar_export.manifest import FORMAT, MANIFEST, RUNTIME_CACHE, BundleError, bundle_files, parse_manifest
from driftar_export.options import ExportError

SHOWN = 5           # unknown files named in the error


def foreign_files(out: Path, owned: set[str]) -> list[str]:
    """Entries under ``out`` the bundle did not write (symlinks and empty folders included), sorted."""
    owned_dirs = {p.as_posix() for rel in owned for p in Path(rel).parents if p.as_posix() != "."}
    found = []
    for root, dirs, files in os.walk(out):
        rel_root = Path(root).relative_to(out)
        for name in sorted(dirs):
            rel = (rel_root / name).as_posix()
            if rel == RUNTIME_CACHE or rel.startswith(RUNTIME_CACHE + "/"):
                continue
            if os.path.islink(os.path.join(root, name)) or rel not in owned_dirs:
                found.append(rel + "/")
        dirs[:] = [d for d in dirs                                   # descend into our own folders only
                   if (rel_root / d).as_posix() in owned_dirs and not os.path.islink(os.path.join(root, d))]
        found += [(rel_root / f).as_posix() for f in sorted(files)
                  if (rel_root / f).as_posix() not in owned or os.path.islink(os.path.join(root, f))]
    return sorted(found)


def _shown(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def check_out_dir(out: str | Path, option: str = "--out") -> Path:
    """Raise ExportError unless ``out`` can be (re)written by an export without losing anyone's files:
    its nearest existing ancestor is a writable directory, and ``out`` is absent, empty or our bundle."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{option} {out} exists and is not an export bundle (it is a file); "
                          "choose a new or empty directory")
    for p in [out.parent, *out.parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise ExportError(f"{option} {out}: {p} is a file, not a directory; choose another path")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ExportError(f"{option} {out}: {p} is not writable (permission denied); choose another path")
            break
    if not out.is_dir() or not any(out.iterdir()):
        return out
    try:
        manifest = parse_manifest(out, any_version=True)
        owned = bundle_files(out, manifest)
    except BundleError:
        raise ExportError(f"{option} {out} exists and is not an export bundle (it has no {MANIFEST} of format "
                          f"{FORMAT}; it holds {_shown(foreign_files(out, set()))}), and an export replaces its "
                          "directory whole; choose a new or empty directory") from None
    foreign = foreign_files(out, owned)
    if foreign:
        raise ExportError(f"{option} {out} holds files the export bundle there did not write ({_shown(foreign)}); an "
                          "export replaces its directory whole and would delete them. Choose a new or empty "
                          "directory, or move those files out")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ExportError(f"{option} {out} is not writable (permission denied); choose another path")
    return out
