"""Prebuilt wire frames are byte for byte what the ``websockets`` library would send."""

from __future__ import annotations

import pytest
from websockets.frames import Frame as LibraryFrame
from websockets.frames import Opcode

from server.edge.frame import Frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
@pytest.mark.parametrize("binary", [False, True])
def test_wire_bytes_match_the_library_serialization(length: int, binary: bool) -> None:
    data = (b"\x93" if binary else b"x") * length
    expected = LibraryFrame(Opcode.BINARY if binary else Opcode.TEXT, data).serialize(mask=False)
    frame = Frame(data, binary)
    assert frame.wire == expected
    assert frame.data is data and frame.binary is binary
