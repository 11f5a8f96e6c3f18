"""The one Dataset type behind every loader: a list of records plus a function that reads one.

A record is a small dict (a file path, a label, a caption ...). ``read(record)`` turns it into
a sample dict of tensors and strings. Reading changes no process-wide setting (torch's thread
count is the caller's; DataLoader workers run one intra-op thread each, see ``data.dataloader``).
If reading fails with a :class:`DataError` (one corrupt JPEG among thousands) the dataset warns,
counts it in ``.skipped`` and returns the next readable sample instead; with ``strict=True`` it
raises. Used by every notebook that loads data.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

from torch.utils.data import Dataset

from mmcourse.data.errors import DataError, DataWarning
from mmcourse.data.sources import Info

MAX_CONSECUTIVE_BAD = 50


class Records(Dataset):
    """``records[i]`` → ``read(records[i])``, with ``.info`` metadata and counted skipping."""

    def __init__(self, records: list[Any], read: Callable[[Any], dict], info: Info, strict: bool = False):
        self.records = records
        self.read = read
        self.info = info
        self.strict = strict
        self.skipped: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        n = len(self.records)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.info.name} {self.info.split} ({n} samples)")
        i %= n
        if i not in self.skipped:
            try:
                return self.read(self.records[i])
            except DataError as exc:
                if self.strict:
                    raise
                self._note(i, exc)
        for j in range(1, min(n, MAX_CONSECUTIVE_BAD + 1)):
            k = (i + j) % n
            if k in self.skipped:
                continue
            try:
                return self.read(self.records[k])
            except DataError as exc:
                self._note(k, exc)
        raise DataError(f"{self.info.name} {self.info.split}: no readable sample near index {i} "
                        f"({len(self.skipped)} unreadable so far); last problem: {self.skipped[i]}")

    def _note(self, i: int, exc: DataError) -> None:
        self.skipped[i] = str(exc)
        warnings.warn(f"{self.info.name} {self.info.split}: skipped unreadable item {i} "
                      f"({len(self.skipped)} skipped so far; returning the next readable one; "
                      f"strict=True raises instead): {exc}", DataWarning, stacklevel=3)

    def column(self, key: str) -> list:
        """One field of every record (e.g. ``"label"``) without reading any file."""
        return [r[key] for r in self.records]

    def __repr__(self) -> str:
        return f"<{self.info.name} {self.info.split}: {len(self):,} samples, source={self.info.source}>"
