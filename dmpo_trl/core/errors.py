"""Error types of dmpo_trl. Every problem with a data row is a `DMPODataError` that names the row and the reason."""

from __future__ import annotations


__all__ = ["DMPODataError", "TemplateRejected"]


class DMPODataError(ValueError):
    """A preference pair that DMPO cannot train on.

    Args:
        reason (`str`): what is wrong, in words a user can act on.
        row (`int`, *optional*): index of the row (counted from 0) in the dataset, or in `source` when given.
        side (`str`, *optional*): ``"chosen"``, ``"rejected"`` or ``"prompt"``, when the problem is on one side.
        source (`str`, *optional*): the file (or dataset) the row comes from; the message then starts with it.
    """

    def __init__(self, reason: str, row: int | None = None, side: str | None = None, source: str | None = None):
        self.reason = reason
        self.row = row
        self.side = side
        self.source = source
        where = []
        if row is not None:
            where.append(f"row {row}")
        if side is not None:
            where.append(side)
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__((f"{source}: " if source else "") + prefix + reason)

    def __reduce__(self):  # keep row/side/source when the error crosses a process boundary (datasets num_proc)
        return (type(self), (self.reason, self.row, self.side, self.source))


class TemplateRejected(Exception):
    """The chat template raised while rendering; re-raised as `DMPODataError` with the row."""
