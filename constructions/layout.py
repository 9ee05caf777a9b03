"""Named residual stream (tracr-style): every coordinate of the residual belongs to a named block.

A :class:`Layout` is an ordered list of :class:`Block` s. Weights are written against names and indices inside a
block, never raw offsets::

    lay = Layout()
    lay.add("op", (S, S), "the held operator Q (normalised to sum 1)")
    lay.add("one", 1, "constant 1 (carries biases through bilinear units)")
    lay.index("op", i, j)      # -> integer coordinate of Q[i, j]
    lay["op"]                  # -> slice of the whole block
    lay.table()                # -> rows {name, start, stop, size, shape, description}

A layout is frozen after :meth:`Layout.freeze` (constructions freeze it before writing weights), so a weight matrix
and its layout can never disagree. Coordinate labels (``"op[1,0]"``) are used by ``hmmtx inspect``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from hmm.errors import HmmtxError


@dataclass(frozen=True)
class Block:
    """One named block of residual coordinates ``[start, stop)`` viewed as an array of ``shape`` (row-major)."""

    name: str
    start: int
    shape: tuple[int, ...]
    description: str = ""

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    def offset(self, *idx: int) -> int:
        """Row-major offset of element ``idx`` inside the block (``()`` allowed for size-1 blocks)."""
        if not idx:
            if self.size != 1:
                raise HmmtxError(f"block '{self.name}' has shape {self.shape}: give an index")
            return 0
        if len(idx) != len(self.shape):
            raise HmmtxError(f"block '{self.name}' has shape {self.shape}, got index {idx}")
        off = 0
        for i, s in zip(idx, self.shape):
            if not 0 <= i < s:
                raise HmmtxError(f"block '{self.name}': index {idx} out of range for shape {self.shape}")
            off = off * s + int(i)
        return off

    def labels(self) -> list[str]:
        """One label per coordinate: ``name`` for size-1 blocks, else ``name[i,j]``."""
        if self.shape in ((), (1,)):
            return [self.name]
        out = []
        for flat in range(self.size):
            idx, rem = [], flat
            for s in reversed(self.shape):
                idx.append(rem % s)
                rem //= s
            out.append(f"{self.name}[{','.join(str(i) for i in reversed(idx))}]")
        return out


class Layout:
    """Ordered named blocks of the residual stream; ``width`` = total number of coordinates ``D``."""

    def __init__(self) -> None:
        self._blocks: dict[str, Block] = {}
        self._width = 0
        self._frozen = False

    # -------------------------------------------------------------- building
    def add(self, name: str, shape: int | tuple[int, ...], description: str = "") -> Block:
        """Append a block (``shape`` an int for a vector block or a tuple, e.g. ``(S, S)`` for a matrix block)."""
        if self._frozen:
            raise HmmtxError(f"layout is frozen: cannot add block '{name}'")
        if not name or not isinstance(name, str):
            raise HmmtxError(f"layout: block name must be a non-empty string, got {name!r}")
        if name in self._blocks:
            raise HmmtxError(f"layout: duplicate block name '{name}'")
        shp = (int(shape),) if isinstance(shape, (int,)) else tuple(int(s) for s in shape)
        if not shp or any(s <= 0 for s in shp):
            raise HmmtxError(f"layout: block '{name}' needs a positive shape, got {shape!r}")
        blk = Block(name, self._width, shp, description)
        self._blocks[name] = blk
        self._width = blk.stop
        return blk

    def freeze(self) -> "Layout":
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    # -------------------------------------------------------------- lookup
    @property
    def width(self) -> int:
        return self._width

    def block(self, name: str) -> Block:
        try:
            return self._blocks[name]
        except KeyError:
            known = ", ".join(self._blocks)
            raise HmmtxError(f"layout has no block '{name}' (blocks: {known})") from None

    def __getitem__(self, name: str) -> slice:
        return self.block(name).slice

    def __contains__(self, name: object) -> bool:
        return name in self._blocks

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks.values())

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def names(self) -> list[str]:
        return list(self._blocks)

    def index(self, name: str, *idx: int) -> int:
        """Residual coordinate of element ``idx`` of block ``name``."""
        blk = self.block(name)
        return blk.start + blk.offset(*idx)

    def labels(self) -> list[str]:
        """One label per residual coordinate (length ``width``)."""
        out: list[str] = []
        for blk in self._blocks.values():
            out.extend(blk.labels())
        return out

    def table(self) -> list[dict[str, Any]]:
        """Rows ``{name, start, stop, size, shape, description}`` in residual order."""
        return [
            {
                "name": b.name,
                "start": b.start,
                "stop": b.stop,
                "size": b.size,
                "shape": list(b.shape),
                "description": b.description,
            }
            for b in self._blocks.values()
        ]

    def __repr__(self) -> str:
        return f"Layout(width={self._width}, blocks={self.names})"


__all__ = ["Block", "Layout"]
