"""Per-row copies of a few pre-encoded values: how answers carry labels without a Python loop.

A classifier's answer repeats one of a handful of encoded labels (a protobuf ``Value`` element,
or a length-prefixed v2 ``BYTES`` element) once per row. Both encoders keep the class set's
elements in a :class:`Choices` and copy them per row with numpy.
"""

from __future__ import annotations

import numpy as np


class Choices:
    """One encoded byte string per class, and what copies them row by row in numpy:
    ``join(index)`` is ``b"".join(elements[i] for i in index)``, for 10,000 rows ~0.04 ms when
    the elements have one length, ~0.16 ms otherwise, against ~0.3 ms for the join itself."""

    def __init__(self, elements: list[bytes]) -> None:
        self.elements = elements
        self.lengths = np.array([len(e) for e in elements], dtype=np.int64)
        blob = b"".join(elements)
        self.blob = np.frombuffer(blob, dtype=np.uint8)
        self.starts = np.cumsum(self.lengths) - self.lengths
        width = len(elements[0]) if elements else 0
        self.fixed = (
            np.frombuffer(blob, dtype=f"S{width}")
            if width and all(len(e) == width for e in elements)
            else None
        )

    def join(self, label_index: np.ndarray) -> bytes:
        if len(label_index) < 64:
            return b"".join(map(self.elements.__getitem__, label_index.tolist()))
        if self.fixed is not None:
            return self.fixed[label_index].tobytes()
        lengths = self.lengths[label_index]
        out_starts = np.cumsum(lengths) - lengths
        source = np.repeat(self.starts[label_index] - out_starts, lengths)
        source += np.arange(len(source))
        return self.blob[source].tobytes()
