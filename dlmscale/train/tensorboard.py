"""A TensorFlow-free TensorBoard scalar writer.

clu's metric writers import TensorFlow; this project must not. Event files are TFRecord frames of
`Event` protos, and a scalar event needs only a handful of protobuf fields, encoded here by hand.
"""

from __future__ import annotations

import pathlib
import socket
import struct
import time


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _field_bytes(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
  """Event{wall_time=1, step=2, summary=5{value=1{tag=1, simple_value=2}}}."""
  summary_value = _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
  summary = _field_bytes(1, summary_value)
  return (b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
          + _field_bytes(5, summary))


def encode_version_event(wall_time: float) -> bytes:
  return b"\x09" + struct.pack("<d", wall_time) + _field_bytes(3, b"brain.Event:2")


def frame(record: bytes) -> bytes:
  header = struct.pack("<Q", len(record))
  return header + struct.pack("<I", _masked_crc(header)) + record + struct.pack("<I", _masked_crc(record))


def read_records(path: pathlib.Path) -> list[bytes]:
  """Reads the frames back, checking both CRCs (used by tests and by anyone debugging a file)."""
  data, out, pos = path.read_bytes(), [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    if struct.unpack("<I", data[pos + 8:pos + 12])[0] != _masked_crc(header):
      raise ValueError(f"{path}: corrupt record header at byte {pos}")
    record = data[pos + 12:pos + 12 + length]
    if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != _masked_crc(record):
      raise ValueError(f"{path}: corrupt record at byte {pos}")
    out.append(record)
    pos += 16 + length
  return out


class ScalarWriter:
  """Appends scalars to a fresh event file in `logdir` (one file per process start, as TF does)."""

  def __init__(self, logdir: str | pathlib.Path):
    self.dir = pathlib.Path(logdir)
    self.dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self.path = self.dir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{id(self)}"
    self._f = open(self.path, "ab")
    self._f.write(frame(encode_version_event(now)))

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    now = time.time()
    for tag, value in scalars.items():
      self._f.write(frame(encode_scalar_event(tag, float(value), int(step), now)))
    self._f.flush()

  def close(self) -> None:
    self._f.close()
