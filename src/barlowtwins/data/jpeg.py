"""JPEG bytes read without decoding: the magic bytes, the marker segments, the frame header and the end marker.

    >>> is_jpeg(data)                      # the first bytes are a JPEG's
    >>> jpeg_header(data)                  # (SOF marker, precision, height, width, components), or None
    >>> has_jpeg_end(data)                 # False for a file cut short

Used by the device data path (`data.paths.device`) to send to the device decoder only the JPEGs it can decode.
"""

from __future__ import annotations

from collections.abc import Iterator

JPEG_MAGIC = b"\xff\xd8\xff"  # the first bytes of every JPEG file (SOI marker, then the next marker's 0xFF)


def is_jpeg(data) -> bool:
    """Whether a file's content (bytes, or a 1-D uint8 tensor of them) is a JPEG, by its first bytes."""
    head = bytes(data[:3]) if isinstance(data, (bytes, bytearray, memoryview)) else bytes(data[:3].tolist())
    return head == JPEG_MAGIC


_JPEG_SOS = 0xDA  # start of scan: the entropy-coded image data follows
_JPEG_STANDALONE = (0x01, *range(0xD0, 0xD8))  # markers without a length field (TEM, RSTn)


def jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, offset of its 0xFF) of each marker segment of JPEG bytes after the SOI, up to and including
    the first start of scan (SOS), read from the segment lengths without decoding; ends early at bytes that
    are not a marker (a damaged header)."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        yield marker, i
        length = int.from_bytes(data[i + 2: i + 4], "big")
        if marker == _JPEG_SOS or length < 2:
            return
        i += 2 + length


JPEG_END = b"\xff\xd9"  # the end-of-image (EOI) marker
JPEG_END_WITHIN = 1024  # bytes at a JPEG's end searched for it: writers may pad the file after the marker


def has_jpeg_end(data: bytes, within: int = JPEG_END_WITHIN) -> bool:
    """Whether JPEG bytes end with the end-of-image marker (FF D9) in their last ``within`` bytes and after the
    first scan's start: a file cut short (a truncated download or copy) has none. The marker of an embedded
    thumbnail (EXIF, before the scan) does not count; inside the scan data an FF is always followed by 00 or a
    restart marker, so FF D9 there is the real end. A file padded by more than ``within`` bytes after its end
    counts as without one (the caller then decodes it the careful way)."""
    scan = next((i for marker, i in jpeg_markers(data) if marker == _JPEG_SOS), None)
    if scan is None:
        return False
    return data.rfind(JPEG_END, max(scan + 4, len(data) - within)) >= 0


# Every start-of-frame marker: C0-CF except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_ALL_SOF = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))


def jpeg_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, sample precision, height, width, components) of a JPEG's frame header, read from the
    bytes without decoding; None when no frame header is found (the decoder then reports the file)."""
    for marker, i in jpeg_markers(data):
        if marker in _ALL_SOF:
            if i + 10 > len(data):
                return None
            return (marker, data[i + 4], int.from_bytes(data[i + 5: i + 7], "big"),
                    int.from_bytes(data[i + 7: i + 9], "big"), data[i + 9])
    return None  # scan data before any frame header, or a damaged header
