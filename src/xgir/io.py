"""Atomic file writes, run folders, fingerprints and the on-disk cache.

Every file the library writes goes through ``atomic_path``: it is written under a
temporary name in the same folder and renamed into place only when complete, so
an interrupted run never leaves a partial file that looks finished. A command's outputs
are written as a set with ``run_folder``: into a temporary sibling folder that replaces
the output folder only when every file is written. Files and folders get the modes the
user's umask gives (not mkstemp's 0600). Temporary names hold the writer's process id,
so that leftovers of a killed process (``.NAME.PID.*.tmp``) are recognised and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
_TMP = re.compile(r"^\..+\.(\d+)\.[^.]*\.tmp$")  # .NAME.PID.RANDOM.tmp


def _tmp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_orphans(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files / folders in ``folder`` left by writers that no longer run
    (``.NAME.PID.*.tmp`` with a dead PID); returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TMP.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success
    (with the mode the user's umask gives a new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


RUN_MARKER = ".xgir-run"  # in every folder written by run_folder


def _earlier_results(folder: Path) -> bool:
    """A folder written by xgir: it holds the marker file of :func:`run_folder` (nothing else
    counts: a user's folder with a report.md of their own is not ours to replace)."""
    return (folder / RUN_MARKER).is_file()


def check_output_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """Check before any work that ``out`` can become a results folder: its parent is (or can be
    made) a writable folder, and ``out`` is absent, empty or an earlier xgir results folder.
    Creates nothing. XgirError saying what is wrong otherwise."""
    from xgir.errors import XgirError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XgirError(f"{option} {out} is a file; give a folder for the results")
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise XgirError(f"{option} {out} is the current folder (or one above it), which a run cannot replace; "
                        "give a new folder for the results, e.g. runs/NAME")
    try:
        foreign = out.is_dir() and any(out.iterdir()) and not _earlier_results(out)
    except OSError as err:
        raise XgirError(f"{option} {out}: cannot read the folder ({err.strerror}); give a folder you can "
                        "write") from None
    if foreign:
        raise XgirError(f"{option} {out} is a folder that xgir did not write (no {RUN_MARKER} marker), and a "
                        "run replaces its output folder as a whole; give a new or empty folder")
    _check_creatable(out.resolve().parent, out, option)  # run_folder writes beside out, then renames
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):  # resumable work is written inside it
        raise XgirError(f"{option} {out}: no permission to write in it; give a folder you can write")
    return out


def check_writable_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """Check before any work that files can be written into the folder ``out`` (it is a writable
    folder, or one can be made there). Creates nothing; XgirError saying what is wrong otherwise."""
    from xgir.errors import XgirError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XgirError(f"{option} {out} is a file; give a folder")
    _check_creatable(out.resolve(), out, option)
    return out


def _check_creatable(path: Path, out: Path, option: str) -> None:
    """The nearest existing folder at or above ``path`` is a folder this process may write in."""
    from xgir.errors import XgirError

    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise XgirError(f"{option} {out}: {probe} is a file, so the folder cannot be made")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise XgirError(f"{option} {out}: no permission to write in {probe}")


@contextlib.contextmanager
def run_folder(out: str | os.PathLike, option: str = "--out", keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Write a run's outputs as a set: yield a new temporary folder beside ``out``; when the
    block ends without error it replaces ``out`` (an earlier results folder is removed), and on
    an error or interrupt it is removed and ``out`` keeps the previous results. Leftovers of
    killed runs beside ``out`` are removed first. The entries of ``out`` named in ``keep`` (e.g.
    ``passes``, the resumable chunks of ``xgir correct``) move into the new folder."""
    out = check_output_folder(out, option)
    out.parent.mkdir(parents=True, exist_ok=True)
    _restore_interrupted_swap(out)
    clean_orphans(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out.name), suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        (tmp / RUN_MARKER).write_text("written by xgir; the folder is replaced as a whole by a rerun\n")
        os.chmod(tmp / RUN_MARKER, 0o666 & ~_UMASK)
        yield tmp
        for name in keep:
            if (out / name).exists() and not (tmp / name).exists():
                os.replace(out / name, tmp / name)
        if out.exists():
            old = out.parent / f"{_tmp_prefix(out.name)}old.tmp"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def mark_run_folder(out: str | os.PathLike) -> Path:
    """Create ``out`` (if needed) as an xgir results folder (its marker), for a run that writes
    resumable work into it before :func:`run_folder` writes the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / RUN_MARKER
    if not marker.exists():
        marker.write_text("written by xgir; the folder is replaced as a whole by a rerun\n")
        os.chmod(marker, 0o666 & ~_UMASK)
    return out


def _restore_interrupted_swap(out: Path) -> None:
    """A run killed between the two renames of :func:`run_folder` left ``out`` missing and the
    previous results as ``.NAME.PID.old.tmp``: put them back (before orphans are cleaned)."""
    if out.exists():
        return
    for entry in out.parent.glob(f".{out.name}.*.old.tmp"):
        if entry.is_dir():
            os.replace(entry, out)
            return


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def load_torch(path: str | os.PathLike, what: str = "file", accepts: str = "",
               map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line XgirErrors: a missing, empty, truncated
    or non-torch file, or one holding Python objects (not unpickled, for safety). ``what`` names the
    file ("checkpoint"), ``accepts`` says what xgir reads instead (appended to the message)."""
    from xgir.errors import XgirError

    path = Path(path)
    tail = f"; {accepts}" if accepts else ""
    if path.is_dir():
        raise XgirError(f"{what} {path} is a directory, not a file{tail}")
    if not path.is_file():
        raise XgirError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise XgirError(f"{what} {path} is empty (0 bytes){tail}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure: one line
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found or "Unsupported class" in text:
            obj = f" ({found.group(1)})" if found else ""
            reason = (f"holds Python objects{obj} that xgir does not unpickle (only tensors and plain values "
                      "are read, for safety)")
        elif "zip archive" in text or "central directory" in text:
            reason = "is truncated or damaged (not a complete torch file)"
        else:
            reason = f"is not a torch file ({type(err).__name__})"
        raise XgirError(f"{what} {path} {reason}{tail}") from None


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts and tensors (for cache keys): 16 hex digits;
    dict key order does not matter, tensor values, shapes and dtypes do.

    >>> import torch
    >>> fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    True
    >>> fingerprint(torch.zeros(2)) == fingerprint(torch.zeros(2, dtype=torch.float64))
    False
    >>> len(fingerprint("features", 3))
    16
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(str(t.dtype).encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        elif isinstance(part, torch.nn.Module):
            for name, tensor in part.state_dict().items():
                h.update(name.encode())
                h.update(fingerprint(tensor).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> tuple[str, int, int] | str:
    """What a file's cached results depend on: (name, size in bytes, modification time in ns),
    so that a file replaced under the same name is seen as new; the name alone for what is not a
    readable file (an embedded image's name)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return str(path)
    return str(path), st.st_size, st.st_mtime_ns


def files_fingerprint(files: Any) -> str:
    """:func:`fingerprint` of the :func:`file_identity` of each file (one ``stat`` per file, no read)."""
    return fingerprint([file_identity(f) for f in files])


def cache_dir() -> Path:
    """Folder of the on-disk cache: ``$XGIR_CACHE`` or ``.xgir-cache`` in the working folder."""
    return Path(os.environ.get("XGIR_CACHE", ".xgir-cache"))


def cached(folder: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` cached in ``cache_dir()/folder/key.pt`` (tensors, or dicts / lists of them
    and plain values: loaded with ``weights_only``); a corrupt entry is recomputed."""
    path = cache_dir() / folder / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            from xgir.errors import warn

            warn(f"corrupt cache entry {path} removed; recomputing it")
            path.unlink(missing_ok=True)
    value = compute()
    torch_save(value, path)
    return value
