"""Compact encodings of sparse weight arrays: what pruning buys on disk.

Two lossless encodings of a float32 array whose pruned entries are exactly zero:

- **bitmask**: one bit per weight (1 = non-zero), then the non-zero values as
  float32. Costs ``ceil(n / 8) + 4 * nnz`` bytes.
- **relative index** (CSR with relative indices, as in Han et al., Deep Compression,
  2016): each stored entry keeps the number of zeros skipped since the previous
  entry in ``index_bits`` bits, and its float32 value. A run of zeros longer than
  ``2**index_bits - 1`` is bridged by a filler entry of value 0. The index width is
  chosen per array to minimise the size unless given.

Both decode back to the exact array; the shape is not stored (the model's
architecture holds it). Values are kept as float32: weight sharing and Huffman
coding, the other two stages of Deep Compression, are not applied.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "best_index_bits",
    "decode_bitmask",
    "decode_relative_index",
    "encode_bitmask",
    "encode_relative_index",
    "relative_index_size",
]

_VALUE = np.dtype("<f4")
_HEADER = 5  # relative index: 1 byte index width + 4 bytes entry count


def encode_bitmask(weights: np.ndarray) -> bytes:
    """Encodes `weights` as a bitmask of non-zeros followed by their float32 values.

    Args:
        weights: any array; it is flattened in C order and stored as float32.

    Returns:
        ``ceil(weights.size / 8) + 4 * nnz`` bytes.

    Example:

    ```python
    data = encode_bitmask(np.array([[0.0, 1.5], [0.0, 0.0]]))
    len(data)  # 1 + 4 = 5
    ```
    """
    flat = np.asarray(weights, dtype=_VALUE).ravel()
    nonzero = flat != 0
    return np.packbits(nonzero).tobytes() + flat[nonzero].tobytes()


def decode_bitmask(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Decodes `encode_bitmask`'s output.

    Args:
        data: the encoded bytes.
        shape: the shape of the encoded array.

    Returns:
        The float32 array.
    """
    size = int(np.prod(shape))
    mask_bytes = (size + 7) // 8
    mask = np.unpackbits(np.frombuffer(data[:mask_bytes], dtype=np.uint8), count=size).astype(bool)
    flat = np.zeros(size, dtype=np.float32)
    flat[mask] = np.frombuffer(data[mask_bytes:], dtype=_VALUE)
    return flat.reshape(shape)


def _skips(flat: np.ndarray) -> np.ndarray:
    """Zeros skipped before each non-zero entry of `flat`."""
    positions = np.flatnonzero(flat)
    return np.diff(positions, prepend=-1) - 1


def relative_index_size(weights: np.ndarray, index_bits: int) -> int:
    """Bytes `encode_relative_index(weights, index_bits)` produces, without encoding."""
    skips = _skips(np.asarray(weights).ravel())
    entries = int(np.sum(skips >> index_bits)) + len(skips)
    return _HEADER + (entries * index_bits + 7) // 8 + entries * _VALUE.itemsize


def best_index_bits(weights: np.ndarray) -> int:
    """The index width in 1..16 bits that makes the relative-index encoding smallest."""
    return min(range(1, 17), key=lambda bits: relative_index_size(weights, bits))


def encode_relative_index(weights: np.ndarray, index_bits: int | None = None) -> bytes:
    """Encodes `weights` as relative-index CSR: (zeros skipped, value) per entry.

    Args:
        weights: any array; it is flattened in C order and stored as float32.
        index_bits: bits per relative index, 1..16; None picks `best_index_bits`.

    Returns:
        A 5-byte header (index width, entry count), the packed indices, then the
        float32 values.

    Raises:
        ValueError: `index_bits` is outside 1..16.

    Example:

    ```python
    w = np.zeros(100, "float32"); w[[3, 90]] = 1.0
    data = encode_relative_index(w, index_bits=4)  # 90 - 3 - 1 = 86 zeros: 5 fillers
    ```
    """
    flat = np.asarray(weights, dtype=_VALUE).ravel()
    bits = best_index_bits(flat) if index_bits is None else int(index_bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"index_bits must be in 1..16, got {index_bits}")
    limit = 1 << bits
    skips = _skips(flat)
    fillers = skips >> bits
    group = np.repeat(np.arange(len(skips)), fillers + 1)
    last = np.cumsum(fillers + 1) - 1
    stored = np.full(len(group), limit - 1, dtype=np.uint32)
    stored[last] = skips & (limit - 1)
    values = np.zeros(len(group), dtype=_VALUE)
    values[last] = flat[flat != 0]
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    index_bytes = np.packbits(((stored[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()
    header = bytes([bits]) + len(group).to_bytes(4, "little")
    return header + index_bytes + values.tobytes()


def decode_relative_index(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Decodes `encode_relative_index`'s output.

    Args:
        data: the encoded bytes.
        shape: the shape of the encoded array.

    Returns:
        The float32 array.
    """
    bits = data[0]
    entries = int.from_bytes(data[1:_HEADER], "little")
    index_end = _HEADER + (entries * bits + 7) // 8
    unpacked = np.unpackbits(np.frombuffer(data[_HEADER:index_end], dtype=np.uint8))
    digits = unpacked[: entries * bits].reshape(entries, bits).astype(np.int64)
    stored = digits @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    positions = np.cumsum(stored + 1) - 1
    flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
    flat[positions] = np.frombuffer(data[index_end:], dtype=_VALUE)
    return flat.reshape(shape)
