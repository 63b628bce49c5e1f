"""Per-image passes sharded over processes (torchrun), written in chunks, resumable.

One process (no ``torchrun``): the pass runs here, as a plain loop. Under
``torchrun --nproc_per_node=N``, :func:`init_dist` joins the process group (gloo on
the CPU; ``cpu:gloo,cuda:nccl`` on GPUs, each rank on ``cuda:LOCAL_RANK``) and every rank
takes its share of the dataset.

Layout of a pass over ``n`` images (positions 0..n-1 of an index list into a dataset):
positions are cut into chunks of ``chunk_images``; chunk ``c`` belongs to rank
``c % world`` (strided: no padding, no duplicates). Each rank writes its chunks as
``<run dir>/<pass>-<fingerprint>/chunk-00000.pt`` (atomically: a file that exists is
complete), next to ``manifest.json`` (the fingerprint's inputs). A rerun with the same
config (same fingerprint, any world size) skips the chunks on disk; a different config
has another fingerprint, hence another folder, and reuses nothing. :func:`load_pass`
reads the chunks back in dataset order (the run folder must be visible to every rank:
one machine, or a shared file system).

Ranks meet after every round of ``world`` chunks: they exchange a status (images done,
or the error of a failed rank), rank 0 shows progress, and an error on any rank ends
the pass on every rank with one line naming the rank (:class:`RankError`).
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as tdist
from pydantic import Field
from torch.utils.data import DataLoader, default_collate

from xgir.config import StrictModel
from xgir.errors import XgirError
from xgir.io import fingerprint, torch_save, write_json
from xgir.progress import Progress

STOP_ENV = "XGIR_TEST_STOP_AFTER_CHUNKS"  # test hook: "K", "K@RANK", "K:exit", "K@RANK:exit"
BatchFn = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, Any]]


class PassesSection(StrictModel):
    """``passes:`` in the ``xgir correct`` config: how the per-image passes are stored."""

    chunk_images: int = Field(default=2048, gt=0)  # images per chunk file (the unit of resuming)
    store: Literal["float16", "float32"] = "float16"  # dtype of source-train h and r on disk
    resume: bool = True  # false: recompute every chunk


class RankError(XgirError):
    """A rank failed; raised on every rank (message ``rank R: ...``)."""


@dataclass
class Dist:
    """This process's place in the run: rank, world size and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    joined: bool = False  # True when init_dist created the process group (close() destroys it)
    released: bool = False  # True after release(): no more meetings, errors stay on their rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def exchange(self, payload: Any = None, error: str | None = None) -> list[Any]:
        """Every rank's ``payload`` (a small picklable value), in rank order; raise
        :class:`RankError` on every rank when any rank sent an ``error``. Every meeting of the
        ranks goes through here, so a failed rank is seen wherever the others wait."""
        if self.world == 1:
            if error is not None:
                raise RankError(error)
            return [payload]
        if self.released:
            raise XgirError("internal: the ranks were released; no more collective steps")
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, (payload, error))
        for rank, (_, err) in enumerate(out):
            if err is not None:
                raise RankError(f"rank {rank}: {err}")
        return [p for p, _ in out]

    def barrier(self) -> None:
        if self.world > 1:
            self.exchange()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block on every rank: an error on one rank becomes a :class:`RankError`
        naming it, on every rank (with one process, errors pass unchanged)."""
        if self.world == 1:
            yield
            return
        try:
            yield
        except RankError:
            raise
        except Exception as err:
            if self.released:  # the other ranks are gone: the error is this rank's alone
                raise
            if not isinstance(err, XgirError):
                traceback.print_exc()
            self.exchange(error=error_line(err))
            raise  # pragma: no cover - exchange raised

    def release(self) -> None:
        """Call on every rank after the last meeting: from now on each rank works alone (rank 0
        retrains the head, the others exit), so an error no longer waits for the others."""
        self.released = True

    @contextmanager
    def session(self) -> Iterator[None]:
        """:meth:`guard` the block, then :meth:`close` the process group (also after an error)."""
        try:
            with self.guard():
                yield
        finally:
            self.close()

    def close(self) -> None:
        if self.joined and tdist.is_initialized():
            tdist.destroy_process_group()
            self.joined = False


def init_dist(device: torch.device) -> Dist:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (else one process, ``device``).

    On CUDA each rank uses ``cuda:LOCAL_RANK`` and the group has NCCL for GPU tensors and
    gloo for the small CPU messages the runner exchanges."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, device, False)
    rank = int(os.environ.get("RANK", "0"))
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    joined = False
    if not tdist.is_initialized():
        tdist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=60))
        joined = True
    return Dist(tdist.get_rank(), tdist.get_world_size(), device, joined)


def launched_world() -> int:
    """The number of processes torchrun launched (``WORLD_SIZE``; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def active_dist(device: torch.device) -> Dist | None:
    """The :class:`Dist` of a process group the caller has already joined (more than one
    rank), with ``device`` as this rank's device; None when no such group is active."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() <= 1:
        return None
    return Dist(tdist.get_rank(), tdist.get_world_size(), device, False)


def error_line(err: BaseException) -> str:
    """One line for a failure: the message of an XgirError, else ``Type: message``."""
    if isinstance(err, XgirError):
        return str(err)
    return f"{type(err).__name__}: {err}".splitlines()[0]


# ---- datasets that may hold unreadable images ----------------------------------------------
class GuardedImages(torch.utils.data.Dataset):
    """Items of ``ds`` with their dataset index ``i``; an unreadable image gives
    ``{"i", "bad": message}`` instead of raising, so a DataLoader worker prints no traceback."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return {**self.ds[i], "i": i}
        except XgirError as err:
            return {"i": i, "bad": str(err)}


def collate_readable(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of the readable items (``image``, ``label``, ``i``), ``ok`` bool[B] (which of
    the B requested items were readable) and ``bad``: [(i, message)]."""
    good = [it for it in items if "bad" not in it]
    batch: dict[str, Any] = default_collate(good) if good else {"i": torch.empty(0, dtype=torch.long)}
    batch["ok"] = torch.tensor(["bad" not in it for it in items], dtype=torch.bool)
    batch["bad"] = [(it["i"], it["bad"]) for it in items if "bad" in it]
    return batch


# ---- chunk files --------------------------------------------------------------------------
def pass_folder(run_dir: Path, name: str, key: dict[str, Any]) -> Path:
    """``run_dir/<name>-<fingerprint of key>``."""
    return Path(run_dir) / f"{name}-{fingerprint(key)}"


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:05d}.pt"


_WRITTEN = [0]  # chunks written by this process (all passes), for the test hook


def _stop_hook(rank: int) -> None:
    """Test hook: stop this process after ``K`` chunks written (see STOP_ENV)."""
    spec = os.environ.get(STOP_ENV)
    if not spec:
        return
    _WRITTEN[0] += 1
    written = _WRITTEN[0]
    count, _, how = spec.partition(":")
    count, _, who = count.partition("@")
    if written < int(count) or (who and int(who) != rank):
        return
    if how == "exit":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(9)
    raise RuntimeError(f"stopped after {written} chunks ({STOP_ENV})")


@dataclass
class PassPlan:
    """Chunks of one pass: ``n`` positions, chunk size, this rank's chunks still to compute."""

    folder: Path
    n: int
    chunk: int
    todo: list[int]

    @property
    def n_chunks(self) -> int:
        return (self.n + self.chunk - 1) // self.chunk

    def positions(self, c: int) -> torch.Tensor:
        return torch.arange(c * self.chunk, min((c + 1) * self.chunk, self.n))


def plan_pass(dist: Dist, folder: Path, n: int, chunk: int, key: dict[str, Any], resume: bool = True) -> PassPlan:
    """Create (rank 0) the pass folder and its manifest; list this rank's missing chunks."""
    if dist.is_main:
        manifest = folder / "manifest.json"
        if not resume and folder.exists():
            shutil.rmtree(folder)
        if not manifest.exists():
            write_json(manifest, {"key": key, "images": n, "chunk_images": chunk})
    dist.barrier()
    plan = PassPlan(folder, n, chunk, [])
    for c in range(dist.rank, plan.n_chunks, dist.world):
        path = _chunk_path(folder, c)
        if path.exists() and _read_chunk(path, plan.positions(c)) is None:
            from xgir.errors import warn

            warn(f"damaged chunk {path} removed; recomputing it")
            path.unlink(missing_ok=True)
        if not path.exists():
            plan.todo.append(c)
    return plan


def _read_chunk(path: Path, pos: torch.Tensor) -> dict[str, Any] | None:
    """The chunk at ``path`` (memory-mapped) without its span, or None when it cannot be read
    (truncated, damaged, not a chunk) or holds other positions than ``pos``."""
    try:
        part = torch.load(path, weights_only=True, mmap=True)  # mapped: a merge makes the only copy
    except Exception:  # noqa: BLE001 - any reader failure: the chunk is damaged
        return None
    if not isinstance(part, dict) or not isinstance(part.get("span"), torch.Tensor):
        return None
    if part.pop("span").tolist() != [int(pos[0]), int(pos[-1]) + 1]:
        return None
    return part


def _batches(plan: PassPlan, indices: torch.Tensor, batch_size: int) -> Iterator[list[int]]:
    """Dataset indices of this rank's missing chunks, batch by batch (no batch spans two chunks)."""
    for c in plan.todo:
        pos = plan.positions(c)
        for i in range(0, len(pos), batch_size):
            yield indices[pos[i : i + batch_size]].tolist()


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Join per-batch (or per-chunk) outputs: row tensors concatenated, ``sum:`` keys summed,
    ``list:`` keys (lists) concatenated."""
    out: dict[str, Any] = {}
    keys = dict.fromkeys(k for p in parts for k in p)  # a batch of unreadable images may lack some
    for key in keys:
        vals = [p[key] for p in parts if key in p]
        if key.startswith("sum:"):
            out[key] = sum(vals[1:], vals[0])
        elif key.startswith("list:"):
            out[key] = [v for val in vals for v in val]
        else:
            out[key] = torch.cat(vals)
    return out


def run_pass(dist: Dist, plan: PassPlan, dataset: Any, indices: torch.Tensor, batch_fn: BatchFn,
             batch_size: int, workers: int = 0, desc: str = "", progress: bool = True,
             collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
    """Compute this rank's missing chunks of a pass: ``batch_fn(batch, positions)`` on each
    batch of ``dataset[indices[positions]]`` (a dict of row tensors [B,...], ``sum:`` tensors
    and ``list:`` lists), merged per chunk and saved atomically."""
    if len(indices) != plan.n:
        raise XgirError(f"pass {plan.folder.name}: {len(indices)} indices for a plan of {plan.n}")
    loader = DataLoader(dataset, batch_sampler=list(_batches(plan, indices, batch_size)), num_workers=workers,
                        pin_memory=dist.device.type == "cuda", collate_fn=collate_fn)
    batches = iter(loader)
    todo = set(plan.todo)
    remaining = sum(dist.exchange(sum(len(plan.positions(c)) for c in todo)))
    bar = Progress(total=plan.n, initial=plan.n - remaining, desc=desc, enabled=progress and dist.is_main,
                   unit="image")
    for first in range(0, plan.n_chunks, dist.world):
        c = first + dist.rank
        error = None
        done = 0
        if c in todo:
            try:
                pos = plan.positions(c)
                parts = []
                for i in range(0, len(pos), batch_size):
                    parts.append(batch_fn(next(batches), pos[i : i + batch_size]))
                span = torch.tensor([int(pos[0]), int(pos[-1]) + 1])
                torch_save(_merge(parts) | {"span": span}, _chunk_path(plan.folder, c))
                done = len(pos)
                _stop_hook(dist.rank)
            except Exception as err:  # noqa: BLE001 - reported to every rank below
                if dist.world == 1:
                    raise
                if not isinstance(err, XgirError):
                    traceback.print_exc()
                error = error_line(err)
        bar.update(sum(dist.exchange(done, error)))
    bar.close()


def load_pass(plan: PassPlan) -> dict[str, Any]:
    """Every chunk of a pass (after all ranks ran it), merged in dataset order."""
    parts = []
    for c in range(plan.n_chunks):
        path = _chunk_path(plan.folder, c)
        if not path.exists():
            raise XgirError(f"chunk {path} is missing; rerun (the run resumes from the chunks on disk)")
        part = _read_chunk(path, plan.positions(c))
        if part is None:
            path.unlink(missing_ok=True)
            raise XgirError(f"chunk {path} was damaged and is removed; rerun to recompute it (the run resumes "
                            "from the other chunks)")
        parts.append(part)
    return _merge(parts)


def sharded_pass(dist: Dist, run_dir: Path, name: str, key: dict[str, Any], dataset: Any,
                 indices: torch.Tensor, batch_fn: BatchFn, *, batch_size: int, chunk_images: int,
                 workers: int = 0, resume: bool = True, progress: bool = True,
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> PassPlan:
    """Plan and run one pass (sharded, resumable) over ``dataset[indices]``; returns when every
    rank is done: :func:`load_pass` of the plan then gives the merged outputs of ``batch_fn``
    in dataset order."""
    plan = plan_pass(dist, pass_folder(run_dir, name, key), len(indices), chunk_images,
                     {"pass": name, **key}, resume)
    run_pass(dist, plan, dataset, indices, batch_fn, batch_size, workers, name, progress, collate_fn)
    dist.barrier()
    return plan
