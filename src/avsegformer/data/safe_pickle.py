"""Read and write AVSBench's ``audio_log_mel/*.pkl`` files without executing their content.

Each file is a plain ``pickle.dump`` of a torch float32 tensor ``[5, 1, 96, 64]``
(``shared/spec/audio-frontend.md`` §4). Unpickling such a file with :mod:`pickle` runs
whatever callables it names, so this module never does that. It reads the pickle with
an unpickler whose ``find_class`` knows exactly three globals:

* ``torch._utils._rebuild_tensor_v2`` -> :func:`_rebuild_tensor` (view a storage as a
  tensor of a given size, stride and offset; nothing else);
* ``torch.storage._load_from_bytes`` -> :func:`_load_legacy_storage`, an own parser of
  the legacy ``torch.save`` stream it wraps (magic number, protocol, system info, one
  storage descriptor read with the same restrictions, raw little-endian data);
* ``collections.OrderedDict`` (the empty backward-hook dictionary).

Anything else is refused with :class:`UnsafePickleError` naming the file and the global;
no code from the file ever runs. Output tensors are detached, on the CPU.
"""

from __future__ import annotations

import collections
import io
import logging
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CorruptFileError, MissingFileError, NonFiniteDataError, UnsafePickleError
from ..fileio import atomic_path
from ..finite import require_finite

logger = logging.getLogger(__name__)

LOGMEL_SHAPE: tuple[int, int, int, int] = (5, 1, 96, 64)

# torch's legacy (pre-zip) serialisation header values.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage classes named inside the legacy stream -> element type.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class _StorageType:
    """Stand-in for ``torch.<X>Storage`` inside the legacy stream (holds its dtype only)."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype


class _RefusingUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except those in ``allowed`` and no persistent id."""

    def __init__(self, stream: io.BytesIO, source: Path, allowed: dict[tuple[str, str], Any]):
        super().__init__(stream)
        self._source = source
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load global '{module}.{name}': an AVSBench log-mel "
                "pickle only holds a float tensor, so this file is not one (or was tampered "
                "with); nothing from it was executed. Recreate it from the WAV file."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: unexpected persistent id {pid!r} in the pickle; refused"
        )


class _LegacyStorageUnpickler(_RefusingUnpickler):
    """Reads the storage descriptor of a legacy ``torch.save`` stream."""

    def persistent_load(self, pid: Any) -> Any:
        is_storage = (
            isinstance(pid, tuple)
            and len(pid) >= 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
        )
        if not is_storage:
            return super().persistent_load(pid)
        _, storage_type, key, _location, numel = pid[:5]
        return {"key": str(key), "dtype": storage_type.dtype, "numel": int(numel)}


def _storage_globals() -> dict[tuple[str, str], Any]:
    return {("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()}


def _load_legacy_storage(data: bytes, source: Path) -> np.ndarray:
    """Parse ``torch.save(storage, _use_new_zipfile_serialization=False)`` bytes.

    Returns the storage's elements as a 1-D read-only numpy array (dtype of the storage
    class, e.g. float32 for ``FloatStorage``).
    """
    if not isinstance(data, bytes):
        raise CorruptFileError(f"{source}: storage payload is {type(data).__name__}, not bytes")
    stream = io.BytesIO(data)
    plain = _RefusingUnpickler(stream, source, {})
    magic = plain.load()
    if magic != _LEGACY_MAGIC:
        raise CorruptFileError(f"{source}: the embedded tensor data has a wrong magic number")
    protocol = plain.load()
    if protocol != _LEGACY_PROTOCOL:
        raise CorruptFileError(f"{source}: unsupported torch storage protocol {protocol!r}")
    sys_info = plain.load()
    little_endian = (
        bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    )
    descriptor = _LegacyStorageUnpickler(stream, source, _storage_globals()).load()
    keys = plain.load()
    if not isinstance(descriptor, dict) or not isinstance(keys, list) or len(keys) != 1:
        raise CorruptFileError(f"{source}: the embedded tensor data is not a single storage")
    order = "<" if little_endian else ">"
    (numel,) = struct.unpack(order + "q", _read_exact(stream, 8, source))
    dtype = descriptor["dtype"].newbyteorder(order)
    if numel != descriptor["numel"] or numel < 0:
        raise CorruptFileError(
            f"{source}: storage size {numel} does not match its descriptor ({descriptor['numel']})"
        )
    raw = _read_exact(stream, numel * dtype.itemsize, source)
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)


def _read_exact(stream: io.BytesIO, size: int, source: Path) -> bytes:
    raw = stream.read(size)
    if len(raw) != size:
        raise CorruptFileError(
            f"{source}: tensor data is truncated ({len(raw)} of {size} bytes); the file is "
            "incomplete: copy or regenerate it"
        )
    return raw


def _rebuild_tensor(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Safe stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view, copied."""
    del requires_grad, metadata  # loaded tensors are plain data
    if backward_hooks:
        raise UnsafePickleError("tensor pickle carries backward hooks; refused")
    if not isinstance(storage, np.ndarray):
        raise CorruptFileError(f"tensor storage is {type(storage).__name__}, not raw data")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + stride + (int(storage_offset),), default=0) < 0:
        raise CorruptFileError(f"tensor geometry size={size} stride={stride} is invalid")
    last = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if 0 not in size and last >= storage.size:
        raise CorruptFileError(
            f"tensor of size {size} and stride {stride} reaches past its storage of "
            f"{storage.size} elements"
        )
    base = torch.from_numpy(np.array(storage))  # a writable copy owned by torch
    return base.as_strided(size, stride, int(storage_offset)).contiguous()


def load_tensor_pickle(path: str | Path) -> torch.Tensor:
    """Load a ``pickle.dump`` of one torch tensor without running code from the file.

    Returns the tensor (CPU, contiguous, detached, ``requires_grad=False``) with the
    dtype and shape it was saved with. Raises :class:`MissingFileError`,
    :class:`UnsafePickleError` (the file names any global other than those a plain
    tensor needs) or :class:`CorruptFileError` (truncated, not a pickle, not a tensor).
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"log-mel file not found: {path}") from None
    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): lambda data: _load_legacy_storage(data, path),
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    try:
        result = _RefusingUnpickler(io.BytesIO(payload), path, allowed).load()
    except (UnsafePickleError, CorruptFileError) as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
    ) as exc:
        raise CorruptFileError(
            f"{path}: not a readable tensor pickle ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt: regenerate it from the WAV file"
        ) from None
    if not isinstance(result, torch.Tensor):
        raise CorruptFileError(f"{path}: the pickle holds a {type(result).__name__}, not a tensor")
    return result


def load_logmel_pkl(
    path: str | Path, expected_shape: tuple[int, ...] | None = LOGMEL_SHAPE
) -> torch.Tensor:
    """Read an AVSBench ``audio_log_mel/*.pkl``: float32 ``[5, 1, 96, 64]`` log-mel examples.

    Values are VGGish log-mels (>= log(0.01) = -4.605). ``expected_shape=None`` accepts
    any ``[N, 1, 96, 64]``. Raises :class:`CorruptFileError` naming the path and the shape
    found when the tensor does not fit (wrong audio length, wrong dtype), and its subclass
    :class:`NonFiniteDataError` when it holds NaN or infinite values.
    """
    tensor = load_tensor_pickle(path)
    if tensor.dtype != torch.float32:
        raise CorruptFileError(
            f"{path}: log-mel tensor has dtype {tensor.dtype}, expected torch.float32"
        )
    fits = (
        tuple(tensor.shape) == tuple(expected_shape)
        if expected_shape is not None
        else tensor.ndim == 4 and tuple(tensor.shape[1:]) == LOGMEL_SHAPE[1:]
    )
    if not fits:
        wanted = expected_shape if expected_shape is not None else ("N",) + LOGMEL_SHAPE[1:]
        raise CorruptFileError(
            f"{path}: log-mel tensor has shape {list(tensor.shape)}, expected {list(wanted)} "
            "(one 0.96 s example per frame); regenerate it from the WAV file"
        )
    # A NaN log-mel would pass every later step and only show as a wrong metric.
    require_finite(
        tensor,
        f"log-mel file {path} (regenerate it from the WAV file)",
        error=NonFiniteDataError,
    )
    return tensor


def write_logmel_pkl(
    path: str | Path, examples: torch.Tensor, *, requires_grad: bool = True
) -> Path:
    """Write log-mel examples exactly as AVSBench's preprocessing did: ``pickle.dump(tensor)``.

    ``examples``: float32 ``[N, 1, 96, 64]`` (AVSBench: N = 5). Stored on the CPU,
    contiguous, as a leaf with ``requires_grad`` (True like AVSBench's files), pickle
    protocol 4. Written to a temporary name and renamed, so no half-written file is left.
    Returns ``path``. Such files are readable by AVSBench/AVSegFormer's ``pickle.load``
    and by :func:`load_logmel_pkl`.
    """
    path = Path(path)
    tensor = torch.as_tensor(examples)
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != LOGMEL_SHAPE[1:]:
        raise ValueError(
            f"log-mel examples must have shape [N, 1, 96, 64], got {list(tensor.shape)}"
        )
    tensor = tensor.detach().to("cpu", torch.float32).contiguous().clone()
    tensor.requires_grad_(requires_grad)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        pickle.dump(tensor, handle, protocol=4)
    return path
