"""Helpers of the client tests: the golden outputs and PNG pixels, in plain
Python (no imaging library)."""

import base64
import json
import os
import struct
import zlib

DATA = os.environ["JANUS_TESTDATA"]
GOLDEN = json.load(open(os.path.join(DATA, "golden.json")))


def golden_u8(name):
    """A uint8 tensor of golden.safetensors, flat."""
    with open(os.path.join(DATA, "golden.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        start, end = header[name]["data_offsets"]
        assert header[name]["dtype"] == "U8", header[name]
        f.seek(8 + n + start)
        return f.read(end - start)


def png_pixels(png):
    """RGB8 pixels of a PNG (the server writes 8-bit RGB, non-interlaced)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 2), "expected 8-bit RGB"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out += line
        prev = line
    return width, height, bytes(out)


def assert_pixels(name, got, first=None):
    """`got` matches golden `name` (or its first `first` images) within its pixel tolerance."""
    want = golden_u8(name)
    if first is not None:
        want = want[: len(want) // GOLDEN["tensors"][name]["shape"][0] * first]
    tol = GOLDEN["tensors"][name]["tolerance"]
    assert len(got) == len(want), (len(got), len(want))
    diffs = [abs(a - b) for a, b in zip(got, want)]
    assert max(diffs) <= tol["max_abs_diff"], max(diffs)
    assert sum(d > 0 for d in diffs) <= tol["max_fraction_differing"] * len(want)


def data_url(name):
    with open(os.path.join(DATA, "images", name), "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()
