"""The feedback store: what a person said about regions of images, saved atomically and loaded back.

A :class:`FeedbackStore` is one SQLite file, one row per (image, region, annotator) with the
region's mask, the question, the answer, who and when; every write is one transaction, so a
crash or an error mid-write leaves no partial rows. :meth:`FeedbackStore.feedback_masks` gives
F_i (1 = irrelevant pixel) for fine-tuning (:mod:`xgir.correct.bayes_feedback`, guidance losses).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xgir.errors import XgirError

SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class FeedbackRecord:
    """One answer about one region of one image.

    region: bool[H,W] mask, or a box ``(row0, col0, row1, col1)`` (end-exclusive) in pixels.
    irrelevant: the question asked ("is this region irrelevant?"); accepted: the answer.
    """

    image_id: int
    region_id: int
    region: object
    accepted: bool
    annotator: str
    irrelevant: bool = True
    round: int = 0


class FeedbackStore:
    """SQLite store of region feedback for one image set of ``num_images`` images of
    ``height`` x ``width`` pixels.

    ``FeedbackStore(path, num_images, height, width)`` creates the file (or opens it and checks
    the sizes match); ``FeedbackStore(path)`` opens an existing one. Rows: image_id, region_id,
    the region's mask (packed bits), irrelevant, accepted, annotator, created_at (UTC ISO time),
    round; (image_id, region_id, annotator) is unique. :meth:`add` validates every record first
    and writes them in one transaction, so a crash or error mid-write leaves no partial rows.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        num_images: int | None = None,
        height: int | None = None,
        width: int | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        exists = self.path.exists()
        if not exists and None in (num_images, height, width):
            raise XgirError(
                f"no feedback store at {self.path}; give num_images, height and width to create one"
            )
        if self.path.is_dir():
            raise XgirError(f"feedback store {self.path} is a directory; give a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._sql("opening it"):
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=self.timeout)
        try:
            with self._sql("opening it"):
                self._check_integrity(exists)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._init_schema(num_images, height, width)
        except BaseException:
            self._conn.close()
            raise

    @contextlib.contextmanager
    def _sql(self, action: str) -> Iterator[None]:
        """SQLite errors as one XgirError line: locked (retry), damaged or not a store."""
        try:
            yield
        except sqlite3.OperationalError as err:
            text = str(err).lower()
            if "locked" in text or "busy" in text:
                raise XgirError(
                    f"feedback store {self.path} is locked by another process (waited {self.timeout:g} s) "
                    f"while {action}; nothing was changed: retry when that process has finished"
                ) from None
            if "readonly" in text or "read-only" in text:
                raise XgirError(
                    f"feedback store {self.path} is read-only (no permission to write it or its folder) "
                    f"while {action}; nothing was changed, the stored feedback is intact: make it writable, "
                    "or give another feedback path"
                ) from None
            raise XgirError(f"feedback store {self.path}: {action} failed ({err})") from None
        except sqlite3.DatabaseError as err:
            raise XgirError(
                f"{self.path} is damaged or not an SQLite database ({err}); it was left as it is: "
                "restore it from a backup, or give another path for a new store"
            ) from None

    def _check_integrity(self, exists: bool) -> None:
        """An existing file must be an intact SQLite database holding an xgir store (or none yet)."""
        if not exists:
            return
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        problems = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"integrity check: {problems[0]}")
        ours = {"meta", "feedback"}
        foreign = tables - ours - {"sqlite_sequence"}
        if foreign or (tables and not ours <= tables):
            raise XgirError(
                f"{self.path} is an SQLite database but not an xgir feedback store (its tables: "
                f"{', '.join(sorted(tables))}); give another path"
            )
        if tables:
            schema = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if schema is None:
                raise XgirError(f"{self.path} is not an xgir feedback store (no schema version); give another path")

    # ------------------------------------------------------------ setup
    def _init_schema(self, num_images: int | None, height: int | None, width: int | None) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            c.execute(
                "CREATE TABLE IF NOT EXISTS feedback ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " image_id INTEGER NOT NULL, region_id INTEGER NOT NULL,"
                " mask BLOB NOT NULL, irrelevant INTEGER NOT NULL, accepted INTEGER NOT NULL,"
                " annotator TEXT NOT NULL, created_at TEXT NOT NULL, round INTEGER NOT NULL,"
                " UNIQUE (image_id, region_id, annotator))"
            )
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            given = {"num_images": num_images, "height": height, "width": width}
            if not meta:
                for key, value in given.items():
                    if value is None or int(value) <= 0:
                        raise XgirError(f"{key} must be a positive integer, got {value}")
                rows = [(k, str(int(v))) for k, v in given.items() if v is not None] + [("schema", SCHEMA_VERSION)]
                c.executemany("INSERT INTO meta VALUES (?, ?)", rows)
                meta = dict(rows)
            for key, value in given.items():
                if value is not None and int(meta[key]) != int(value):
                    raise XgirError(
                        f"feedback store {self.path} is for {key}={meta[key]}, not {value}; "
                        "use another path"
                    )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.num_images = int(meta["num_images"])
        self.height = int(meta["height"])
        self.width = int(meta["width"])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._sql("counting records"):
            return int(self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    # ------------------------------------------------------------ writing
    def region_mask(self, region: object) -> np.ndarray:
        """A region (bool mask [H,W] or box (r0, c0, r1, c1)) as a checked bool array [H,W]."""
        h, w = self.height, self.width
        if (
            isinstance(region, (tuple, list))
            and len(region) == 4
            and all(isinstance(v, (int, np.integer)) for v in region)
        ):
            r0, c0, r1, c1 = (int(v) for v in region)
            if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
                raise XgirError(
                    f"box {tuple(region)} is out of range for {h}x{w} images; "
                    f"need 0 <= r0 < r1 <= {h}, "
                    f"0 <= c0 < c1 <= {w}"
                )
            mask = np.zeros((h, w), dtype=bool)
            mask[r0:r1, c0:c1] = True
            return mask
        arr = (
            region.detach().cpu().numpy()
            if isinstance(region, torch.Tensor)
            else np.asarray(region)
        )
        if arr.shape != (h, w):
            raise XgirError(
                f"region mask has shape {arr.shape}, expected ({h}, {w}) (or a box r0, c0, r1, c1)"
            )
        if arr.dtype != bool:
            if not np.isin(arr, (0, 1)).all():
                raise XgirError("region mask values must be 0/1 or boolean")
            arr = arr.astype(bool)
        if not arr.any():
            raise XgirError("region mask is empty; a region needs at least one pixel")
        return arr

    def _check(self, rec: FeedbackRecord) -> tuple:
        if (
            not isinstance(rec.image_id, (int, np.integer))
            or not 0 <= int(rec.image_id) < self.num_images
        ):
            raise XgirError(
                f"unknown image id {rec.image_id}; this store holds ids 0..{self.num_images - 1}"
            )
        if not isinstance(rec.region_id, (int, np.integer)) or int(rec.region_id) < 0:
            raise XgirError(f"region id must be a non-negative integer, got {rec.region_id!r}")
        if not isinstance(rec.annotator, str) or not rec.annotator.strip():
            raise XgirError("annotator must be a non-empty name (spaces around it are dropped)")
        if any(unicodedata.category(ch)[0] == "C" for ch in rec.annotator):
            raise XgirError(f"annotator {rec.annotator!r} holds a control character (a newline, tab...); "
                            "give the name alone")
        for name in ("accepted", "irrelevant"):
            value = getattr(rec, name)
            if not isinstance(value, bool | np.bool_):
                raise XgirError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
        if not isinstance(rec.round, int | np.integer) or isinstance(rec.round, bool) or rec.round < 0:
            raise XgirError(f"round must be a non-negative integer, got {rec.round!r}")
        mask = self.region_mask(rec.region)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        return (
            int(rec.image_id),
            int(rec.region_id),
            np.packbits(mask).tobytes(),
            int(bool(rec.irrelevant)),
            int(bool(rec.accepted)),
            rec.annotator.strip(),
            now,
            int(rec.round),
        )

    @staticmethod
    def _rollback(cursor: sqlite3.Cursor) -> None:
        with contextlib.suppress(sqlite3.Error):
            cursor.execute("ROLLBACK")

    def _insert(self, cursor: sqlite3.Cursor, row: tuple) -> None:
        cursor.execute(
            "INSERT INTO feedback (image_id, region_id, mask, irrelevant, accepted, annotator,"
            " created_at, round) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def add(self, records: Iterable[FeedbackRecord]) -> int:
        """Validate all ``records``, then write them in one transaction; returns how many.

        Raises XgirError (and writes nothing) on an unknown image id, a region out of range, an
        empty region, or a duplicate (image, region, annotator).
        """
        rows = [self._check(r) for r in records]
        if not rows:
            return 0

        def insert(cursor: sqlite3.Cursor) -> None:
            for row in rows:
                self._insert(cursor, row)

        self._transaction(f"saving {len(rows)} record{'s' if len(rows) > 1 else ''}", insert)
        return len(rows)

    def _transaction(self, action: str, write: Callable[[sqlite3.Cursor], None]) -> None:
        """``write(cursor)`` in one transaction: all of it or, on any error, nothing (XgirError
        lines for a duplicate, a locked, read-only or damaged store)."""
        cursor = self._conn.cursor()
        with self._sql(action):
            cursor.execute("BEGIN IMMEDIATE")
        try:
            write(cursor)
            cursor.execute("COMMIT")
        except sqlite3.IntegrityError as err:
            self._rollback(cursor)
            raise XgirError(
                f"feedback not saved: {err} (each image, region and annotator once)"
            ) from None
        except (sqlite3.OperationalError, sqlite3.DatabaseError):
            self._rollback(cursor)
            with self._sql(action):
                raise
        except BaseException:
            self._rollback(cursor)
            raise

    def replace(self, image_id: int, annotator: str, records: Iterable[FeedbackRecord]) -> int:
        """Replace every row of ``annotator`` on ``image_id`` by ``records`` (all of that image and
        annotator; none clears them) in one transaction; returns how many rows were written."""
        self._check(FeedbackRecord(image_id, 0, (0, 0, 1, 1), False, annotator))  # id and name checks
        name = annotator.strip()
        rows = [self._check(r) for r in records]
        if any(r[0] != int(image_id) or r[5] != name for r in rows):
            raise XgirError(f"replace() takes records of image {image_id} by '{name}' only")

        def write(cursor: sqlite3.Cursor) -> None:
            cursor.execute("DELETE FROM feedback WHERE image_id = ? AND annotator = ?", (int(image_id), name))
            for row in rows:
                self._insert(cursor, row)

        self._transaction(f"saving the feedback on image {image_id}", write)
        return len(rows)

    # ------------------------------------------------------------ reading
    def _unpack(self, blob: bytes) -> np.ndarray:
        bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8))[: self.height * self.width]
        return bits.reshape(self.height, self.width).astype(bool)

    def records(self, image_id: int | None = None) -> list[dict]:
        """All rows (optionally of one image) as dicts with the mask as bool[H,W] arrays."""
        sql = (
            "SELECT image_id, region_id, mask, irrelevant, accepted, annotator, created_at, round"
            " FROM feedback"
        )
        args: tuple = ()
        if image_id is not None:
            sql += " WHERE image_id = ?"
            args = (int(image_id),)
        out = []
        with self._sql("reading records"):
            rows = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        for row in rows:
            out.append(
                {
                    "image_id": row[0],
                    "region_id": row[1],
                    "mask": self._unpack(row[2]),
                    "irrelevant": bool(row[3]),
                    "accepted": bool(row[4]),
                    "annotator": row[5],
                    "created_at": row[6],
                    "round": row[7],
                }
            )
        return out

    def asked_images(self) -> set[int]:
        """Ids of the images with at least one row."""
        with self._sql("reading records"):
            return {r[0] for r in self._conn.execute("SELECT DISTINCT image_id FROM feedback")}

    def feedback_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(F bool[N,H,W]: union of accepted irrelevant regions, has_feedback bool[N])."""
        masks = torch.zeros(self.num_images, self.height, self.width, dtype=torch.bool)
        with self._sql("reading records"):
            rows = self._conn.execute(
                "SELECT image_id, mask FROM feedback WHERE irrelevant = 1 AND accepted = 1"
            ).fetchall()
        for image_id, blob in rows:
            masks[image_id] |= torch.from_numpy(self._unpack(blob))
        return masks, masks.flatten(1).any(1)

