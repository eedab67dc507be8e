"""The restricted unpickler for AVSBench log-mel ``.pkl`` files."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from pathlib import Path

import pytest
import torch

from avsegformer.data.safe_pickle import load_logmel_pkl, load_tensor_pickle, write_logmel_pkl
from avsegformer.errors import CorruptFileError, MissingFileError, UnsafePickleError


def avsbench_like_tensor(seed: int = 0) -> torch.Tensor:
    """A [5,1,96,64] float32 leaf with requires_grad=True, as AVSBench's front end returned."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(5, 1, 96, 64, generator=g) * 9 - 4.6).requires_grad_(True)


def dump(obj: object, path: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)
    return path


def globals_in(payload: bytes) -> set[str]:
    """Module.name of every global a pickle stream imports (STACK_GLOBAL / GLOBAL)."""
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(payload):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


def test_reads_avsbench_format_leaf_with_requires_grad(tmp_path):
    tensor = avsbench_like_tensor()
    loaded = load_logmel_pkl(dump(tensor, tmp_path / "a.pkl"))
    assert loaded.dtype == torch.float32 and tuple(loaded.shape) == (5, 1, 96, 64)
    assert torch.equal(loaded, tensor.detach())
    assert not loaded.requires_grad


def test_reads_non_leaf_tensor_as_padded_by_avsbench(tmp_path):
    examples = avsbench_like_tensor()[:3]
    padded = torch.zeros(5, 1, 96, 64)
    padded[:3] = examples
    padded[3:] = examples[-1]  # repeat-last padding: a non-leaf that requires grad
    assert not padded.is_leaf and padded.requires_grad
    assert torch.equal(load_logmel_pkl(dump(padded, tmp_path / "p.pkl")), padded.detach())


def test_reads_strided_views_and_other_dtypes(tmp_path):
    base = torch.arange(48, dtype=torch.float64).reshape(6, 8)
    view = base[1:5, 2:7]  # offset and strides that are not the contiguous ones
    assert torch.equal(load_tensor_pickle(dump(view, tmp_path / "v.pkl")), view)
    ints = torch.arange(7)
    assert torch.equal(load_tensor_pickle(dump(ints, tmp_path / "i.pkl")), ints)


def test_write_logmel_pkl_is_avsbench_format(tmp_path):
    tensor = avsbench_like_tensor(1).detach()
    path = write_logmel_pkl(tmp_path / "sub" / "x.pkl", tensor)
    payload = path.read_bytes()
    # A plain pickle of a tensor: exactly the globals AVSBench's files use.
    assert globals_in(payload) == {
        "torch._utils._rebuild_tensor_v2",
        "torch.storage._load_from_bytes",
        "collections.OrderedDict",
    }
    # What AVSBench/AVSegFormer do with it: pickle.load then .detach().
    original_reader = pickle.loads(payload)
    assert original_reader.requires_grad and torch.equal(original_reader.detach(), tensor)
    assert torch.equal(load_logmel_pkl(path), tensor)
    assert [p.name for p in path.parent.iterdir()] == ["x.pkl"]  # no temporary left over


def test_write_logmel_pkl_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 1, 96, 64\].*\[5, 96, 64\]"):
        write_logmel_pkl(tmp_path / "x.pkl", torch.zeros(5, 96, 64))


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = dump(_RunsCommand(f"touch {marker}"), tmp_path / "evil.pkl")
    with pytest.raises(UnsafePickleError) as info:
        load_logmel_pkl(path)
    message = str(info.value)
    assert str(path) in message and "system" in message
    assert not marker.exists()
    # The payload is real: an ordinary unpickler would have run it.
    pickle.loads(path.read_bytes())
    assert marker.exists()


class _NestedPayload:
    """Calls the allowed _load_from_bytes with a legacy stream that smuggles os.system."""

    def __init__(self, inner: bytes) -> None:
        self.inner = inner

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.inner,))


def test_malicious_payload_inside_the_storage_bytes_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(part, inner, protocol=2)
    pickle.dump(_RunsCommand(f"touch {marker}"), inner, protocol=2)
    path = dump(_NestedPayload(inner.getvalue()), tmp_path / "nested.pkl")
    with pytest.raises(UnsafePickleError, match=r"nested\.pkl.*system"):
        load_tensor_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 1, 20, 200, 600, -300, -5, -1])
def test_truncated_file_is_corrupt_not_a_crash(tmp_path, keep):
    payload = pickle.dumps(avsbench_like_tensor())
    path = tmp_path / "cut.pkl"
    path.write_bytes(payload[:keep])
    with pytest.raises(CorruptFileError, match=r"cut\.pkl"):
        load_logmel_pkl(path)


def test_not_a_tensor_and_wrong_shapes(tmp_path):
    with pytest.raises(CorruptFileError, match="holds a dict"):
        load_tensor_pickle(dump({"a": 1}, tmp_path / "d.pkl"))
    four = dump(avsbench_like_tensor()[:4], tmp_path / "four.pkl")
    with pytest.raises(CorruptFileError, match=r"four\.pkl.*\[4, 1, 96, 64\].*\[5, 1, 96, 64\]"):
        load_logmel_pkl(four)
    assert tuple(load_logmel_pkl(four, expected_shape=None).shape) == (4, 1, 96, 64)
    doubles = dump(torch.zeros(5, 1, 96, 64, dtype=torch.float64), tmp_path / "f64.pkl")
    with pytest.raises(CorruptFileError, match="float64"):
        load_logmel_pkl(doubles)


def test_torch_save_file_is_not_taken_for_a_pickle(tmp_path):
    path = tmp_path / "saved.pkl"
    torch.save(torch.zeros(5, 1, 96, 64), path)  # a zip archive, not what AVSBench wrote
    with pytest.raises(CorruptFileError, match=r"saved\.pkl"):
        load_logmel_pkl(path)


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"absent\.pkl"):
        load_logmel_pkl(tmp_path / "absent.pkl")
