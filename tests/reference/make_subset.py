"""Build ``tests/reference/`` (the reference fixtures the tests use) from ../shared/reference.

The full fixtures (about 30 MB, made by running the authors' AVSegFormer code, see their
README) stay outside the repository; this script makes the committed subset (at most
15 MB) deterministically, so the cut can be reproduced and reviewed:

* ``modules.npz``, ``losses.npz``, ``metrics.npz`` and ``avss_preprocess_behaviour.json``:
  copied byte for byte, and the full fixtures' README as ``SOURCE_README.md``;
* ``manifests/<config>.json``: gzip of the original bytes (``manifests/<config>.json.gz``);
* ``vggish_frontend.npz``: all but one float64 array no test reads;
* ``parity/<config>.npz``: every array the tests compare, values unchanged, except

  - inputs drawn by a seeded rule (``in_frames``, ``in_audio_logmel``) are not stored:
    ``_reference.load_fixture`` regenerates them and checks their SHA-256;
  - the AVSS WAV samples (``in_wav*_int16``) are dropped: no test reads them (the
    network's log-mel input is stored as ``int_vggish_input``);
  - a few large probe arrays keep a subset of their entries along one axis (``CUTS``);
    the tests compare our values at the same positions (``_reference.as_stored``);

  and a ``subset_json`` entry records all of that (source SHA-256, what was regenerated,
  dropped and cut, with the kept indices).

Nothing is unpickled: arrays are read with ``allow_pickle=False``. The ``.npz`` files are
written with fixed timestamps and key order, so a rebuild with the same zlib gives the
same bytes; ``--check`` compares contents (arrays, decompressed bytes) instead.

    python tests/reference/make_subset.py                 # rebuild tests/reference
    python tests/reference/make_subset.py --check         # compare with a fresh build
    python tests/reference/make_subset.py --source DIR    # another copy of shared/reference
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

from _reference import regenerate_input  # noqa: E402

DEFAULT_SOURCE = ROOT.parent / "shared" / "reference"
LIMIT_BYTES = 15 * 10**6  # the repository's budget for these files

# source name -> name here
COPIED = {
    "modules.npz": "modules.npz",
    "losses.npz": "losses.npz",
    "metrics.npz": "metrics.npz",
    "avss_preprocess_behaviour.json": "avss_preprocess_behaviour.json",
    "README.md": "SOURCE_README.md",  # how the full fixtures were made, tolerances, quirks
}
MANIFESTS = ["res50_s4", "res50_ms3", "res50_avss", "pvt2_s4", "pvt2_ms3", "pvt2_avss"]
# Rewritten through the tables below (each gets a ``subset_json`` record).
SUBSETS = [
    "vggish_frontend.npz",
    "parity/res50_s4.npz",
    "parity/res50_avss.npz",
    "parity/pvt2_s4.npz",
    "parity/pvt2_avss.npz",
]

# Inputs the harness drew from seeded generators (reference README, "Inputs").
REGENERATED = {"in_frames": "frames", "in_audio_logmel": "audio_logmel"}
DROPPED = {
    re.compile(r"in_wav\d+_int16"): "AVSS clip samples: no test reads them; the log-mel "
    "the network received is stored as int_vggish_input",
    re.compile(r"stereo44k_int16_wav_examples_f64"): "no test reads it: the float64 path is "
    "checked on mono16k_float (float32 examples of this case are kept)",
}


@dataclasses.dataclass(frozen=True)
class Cut:
    """Keep entries ``0, step, 2*step, ...`` below ``stop`` along ``axis`` of an array."""

    axis: int
    why: str
    step: int = 1
    stop: int | None = None

    def index(self, length: int) -> list[int]:
        stop = length if self.stop is None else min(self.stop, length)
        return list(range(0, stop, self.step))


CUTS = {
    "int_query_gen_probe": Cut(1, "[P, 300, 256]: every 10th of the 300 queries", step=10),
    "int_dec_out_last_probe": Cut(1, "[P, 300, 256]: every 10th of the 300 queries", step=10),
    "int_enc_memory_slice": Cut(
        1, "[P, 129, 256] (memory tokens ::8): every 4th, i.e. tokens ::32 of all levels", step=4
    ),
    "out_pred_probe": Cut(2, "[1, 4, H, W]: the top 56 rows (top, left, right borders)", stop=56),
    "out_mask_feature_c32_probe": Cut(1, "[P, 32, h, w]: the first 8 channels", stop=8),
    "out_mask_feature_c16_probe": Cut(1, "[P, 16, h, w]: the first 8 channels", stop=8),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` that ``np.load`` reads, with fixed timestamps: the same bytes each run."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def cut_npz(source: Path, relative: str) -> dict[str, np.ndarray]:
    """The subset of the fixture ``source / relative``, with its ``subset_json`` record."""
    full = read_npz(source / relative)
    meta = json.loads(str(full["meta_json"]))
    subset: dict[str, Any] = {
        "source": f"shared/reference/{relative}",
        "source_sha256": sha256((source / relative).read_bytes()),
        "made_by": "tests/reference/make_subset.py",
        "regenerated": {},
        "dropped": {},
        "cuts": {},
    }
    kept: dict[str, np.ndarray] = {}
    for key, array in full.items():
        if key in REGENERATED:
            spec = {
                "rule": REGENERATED[key],
                "shape": list(array.shape),
                "dtype": array.dtype.str,
                "sha256": sha256(array.tobytes()),
            }
            # The rule must give these exact bytes before the array may be left out.
            regenerated = regenerate_input(spec, {"meta": meta, **full})
            assert regenerated.tobytes() == array.tobytes(), f"{relative}: {key} rule"
            subset["regenerated"][key] = spec
            continue
        reason = next((why for pattern, why in DROPPED.items() if pattern.fullmatch(key)), None)
        if reason is not None:
            subset["dropped"][key] = {"shape": list(array.shape), "why": reason}
            continue
        cut = CUTS.get(key)
        if cut is not None:
            index = cut.index(array.shape[cut.axis])
            subset["cuts"][key] = {
                "axis": cut.axis,
                "index": index,
                "source_shape": list(array.shape),
                "why": cut.why,
            }
            array = np.take(array, index, axis=cut.axis)
        kept[key] = array
    kept["subset_json"] = np.array(json.dumps(subset, indent=1))
    return kept


def build(source: Path, out: Path) -> None:
    """Write the whole subset from ``source`` (a shared/reference folder) into ``out``."""
    (out / "parity").mkdir(parents=True, exist_ok=True)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for name, copy in COPIED.items():
        shutil.copyfile(source / name, out / copy)
    for name in MANIFESTS:
        raw = (source / "manifests" / f"{name}.json").read_bytes()
        (out / "manifests" / f"{name}.json.gz").write_bytes(gzip.compress(raw, 9, mtime=0))
    for relative in SUBSETS:
        write_npz(out / relative, cut_npz(source, relative))


def built_files(folder: Path) -> list[Path]:
    """The data files under ``folder`` (not this script, not Python caches)."""
    return sorted(
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


def same_content(a: Path, b: Path) -> bool:
    """Equal arrays (``.npz``) or equal decompressed bytes (``.gz``) or equal bytes."""
    if a.suffix == ".npz":
        x, y = read_npz(a), read_npz(b)
        return list(x) == list(y) and all(
            x[k].dtype == y[k].dtype and x[k].shape == y[k].shape and np.array_equal(x[k], y[k])
            for k in x
        )
    if a.suffix == ".gz":
        return gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    return a.read_bytes() == b.read_bytes()


def check(source: Path) -> int:
    """Rebuild into a temporary folder; 0 if tests/reference holds the same content."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        build(source, fresh)
        expected = built_files(fresh)
        committed = [p for p in built_files(HERE) if p.name != "README.md"]
        problems = [f"missing {p}" for p in expected if p not in committed]
        problems += [f"not made by this script: {p}" for p in committed if p not in expected]
        problems += [
            f"differs: {p}"
            for p in expected
            if p in committed and not same_content(fresh / p, HERE / p)
        ]
    for line in problems:
        print(line)
    print("tests/reference matches a fresh build" if not problems else "MISMATCH")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    if not (args.source / "parity").is_dir():
        parser.error(f"no reference fixtures at {args.source}")
    if args.check:
        return check(args.source)
    build(args.source, HERE)
    total = sum((HERE / p).stat().st_size for p in built_files(HERE))
    print(f"tests/reference: {total / 1e6:.2f} MB")
    assert total <= LIMIT_BYTES, f"subset {total} bytes > {LIMIT_BYTES}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
