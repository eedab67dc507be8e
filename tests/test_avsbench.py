"""AVSBench readers on generated datasets in the official layouts, and on the real AVSS CSV.

Expected tensors are computed here independently from the files with PIL/numpy, following
the official loaders' steps (spec avsbench-data.md §2-§6), never from the readers.
"""

from __future__ import annotations

import csv
import json
import logging
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from avsegformer.audio import SILENCE_LOG_MEL
from avsegformer.data import (
    AVBatch,
    AVSSDataset,
    MS3Dataset,
    S4Dataset,
    build_dataset,
    collate,
    read_avss_metadata,
    resolve_root,
)
from avsegformer.data.classes import avss_palette
from avsegformer.data.images import Geometry
from avsegformer.data.safe_pickle import load_tensor_pickle, write_logmel_pkl
from avsegformer.errors import (
    AudioError,
    CorruptFileError,
    DataError,
    MissingFileError,
    NonFiniteError,
)
from datasets import make_avss_dataset, make_ms3_dataset, make_s4_dataset, read_csv, write_csv

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("avsbench")
    make_s4_dataset(root, videos_per_split=2, seed=1)
    make_ms3_dataset(root, videos_per_split=2, seed=2)
    make_avss_dataset(root, videos_per_split=1, seed=3, frame_size=(320, 240))
    return root


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def expected_frame(path: Path, size: tuple[int, int] | None, crop: bool = False) -> np.ndarray:
    """Official frame pipeline, written out: RGB -> PIL geometry -> /255 -> normalise. [3,H,W]."""
    image = Image.open(path).convert("RGB")
    image = _official_geometry(image, size, crop, Image.Resampling.BILINEAR)
    pixels = np.asarray(image).astype(np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def _official_geometry(image, size, crop, resample):
    if size is None:
        return image
    if not crop:
        return image.resize(size, resample)
    w, h = image.size
    if w > h:
        ow, oh = int(1.0 * w * 224 / h), 224
    else:
        ow, oh = 224, int(1.0 * h * 224 / w)
    image = image.resize((ow, oh), resample)
    x1, y1 = int(round((ow - 224) / 2.0)), int(round((oh - 224) / 2.0))
    return image.crop((x1, y1, x1 + 224, y1 + 224))


def expected_labels(path: Path, size, crop: bool) -> np.ndarray:
    """Official colour-mask rule: first palette colour equal to the pixel, else 0."""
    image = _official_geometry(
        Image.open(path).convert("RGB"), size, crop, Image.Resampling.NEAREST
    )
    rgb = np.asarray(image).astype(np.int32)
    matches = np.stack([np.all(rgb == c, axis=-1) for c in avss_palette().astype(np.int32)], -1)
    return np.argmax(matches, axis=-1)


# ------------------------------------------------------------------------------- S4
def test_s4_train_has_only_the_first_mask(data_root):
    dataset = S4Dataset(data_root, "train")
    rows = [
        r for r in csv_rows(data_root / "Single-source/s4_meta_data.csv") if r["split"] == "train"
    ]
    assert len(dataset) == len(rows) == 2
    for index, row in enumerate(rows):  # CSV order kept
        sample = dataset[index]
        assert sample.video_id == row["name"] and sample.category == row["category"]
        assert sample.task == "s4" and sample.split == "train"
        assert sample.frames.shape == (5, 3, 512, 512) and sample.frames.dtype == torch.float32
        assert sample.audio.shape == (5, 1, 96, 64)
        assert sample.masks.shape == (5, 1, 512, 512) and sample.masks.dtype == torch.float32
        assert sample.gt_flags.tolist() == [1, 0, 0, 0, 0]
        assert sample.vid_flags.tolist() == [1, 1, 1, 1, 1]
        assert sample.masks[0].sum() > 0 and torch.count_nonzero(sample.masks[1:]) == 0
        assert set(sample.masks.unique().tolist()) <= {0.0, 1.0}


def test_s4_skip_unlabelled_frames_loads_the_labelled_one_only(data_root):
    full = S4Dataset(data_root, "train", img_size=224)[0]
    lean = S4Dataset(data_root, "train", img_size=224, skip_unlabelled_frames=True)[0]
    assert torch.equal(lean.frames[0], full.frames[0])
    assert torch.count_nonzero(lean.frames[1:]) == 0 and torch.count_nonzero(full.frames[1:]) > 0
    assert torch.equal(lean.masks, full.masks) and torch.equal(lean.audio, full.audio)
    assert torch.equal(lean.gt_flags, full.gt_flags)


def test_s4_val_frames_masks_audio_match_official_pipeline(data_root):
    dataset = S4Dataset(data_root, "val", img_size=512)
    sample = dataset[1]
    data = data_root / "Single-source/s4_data"
    name, category = sample.video_id, sample.category
    for t in range(5):
        frame = data / "visual_frames/val" / category / name / f"{name}_{t + 1}.png"
        np.testing.assert_allclose(
            sample.frames[t].numpy(), expected_frame(frame, (512, 512)), rtol=0, atol=1e-6
        )
        mask = Image.open(data / "gt_masks/val" / category / name / f"{name}_{t + 1}.png")
        official = np.asarray(mask.convert("1").resize((512, 512))).astype(np.float32)
        assert np.array_equal(sample.masks[t, 0].numpy(), official)
    stored = load_tensor_pickle(data / "audio_log_mel/val" / category / f"{name}.pkl")
    assert torch.equal(sample.audio, stored)
    assert sample.gt_flags.tolist() == [1, 1, 1, 1, 1]


def test_s4_native_size_224_is_not_resized(data_root):
    sample = S4Dataset(data_root, "test", img_size=224)[0]
    data = data_root / "Single-source/s4_data/visual_frames/test"
    frame = data / sample.category / sample.video_id / f"{sample.video_id}_3.png"
    assert sample.frames.shape == (5, 3, 224, 224)
    np.testing.assert_allclose(sample.frames[2].numpy(), expected_frame(frame, None), atol=1e-6)


def test_s4_audio_from_wav_matches_pkl(data_root):
    from_pkl = S4Dataset(data_root, "val", img_size=224, audio_source="pkl")[0]
    from_wav = S4Dataset(data_root, "val", img_size=224, audio_source="wav")[0]
    assert from_wav.audio_path.endswith(".wav") and from_pkl.audio_path.endswith(".pkl")
    assert torch.equal(S4Dataset(data_root, "val", img_size=224).load_audio(0), from_pkl.audio)
    torch.testing.assert_close(from_wav.audio, from_pkl.audio, rtol=0, atol=0)


def test_root_may_be_task_folder_or_parent(data_root):
    by_parent = S4Dataset(data_root, "val", img_size=224)
    by_folder = S4Dataset(data_root / "Single-source", "val", img_size=224)
    assert by_parent.root == by_folder.root == data_root / "Single-source"
    assert resolve_root(AVSSDataset.layout, data_root) == data_root / "AVSS"
    with pytest.raises(MissingFileError) as info:
        S4Dataset(data_root / "Multi-sources", "val")
    message = str(info.value)
    assert "s4_meta_data.csv" in message and "Single-source/s4_meta_data.csv" in message


# ------------------------------------------------------------------------------ MS3
def test_ms3_layout_and_masks(data_root):
    dataset = MS3Dataset(data_root, "train", img_size=224)
    rows = [
        r for r in csv_rows(data_root / "Multi-sources/ms3_meta_data.csv") if r["split"] == "train"
    ]
    assert [e.video_id for e in dataset.entries] == [r["video_id"] for r in rows]
    sample = dataset[0]
    name = sample.video_id
    data = data_root / "Multi-sources/ms3_data"
    frame = data / "visual_frames" / name / f"{name}.mp4_4.png"  # no split level, ".mp4_"
    np.testing.assert_allclose(sample.frames[3].numpy(), expected_frame(frame, None), atol=1e-6)
    for t in range(5):
        mask = Image.open(data / "gt_masks/train" / name / f"{name}_{t + 1}.png")
        official = np.asarray(mask.convert("P"), dtype=np.float32) / 255.0  # ToTensor of 'P'
        assert np.array_equal(sample.masks[t, 0].numpy(), official)
    assert sample.gt_flags.tolist() == [1] * 5 and sample.masks.sum() > 0


def test_ms3_palette_mask_with_index_one_is_foreground_and_reported(tmp_path, caplog):
    root = make_ms3_dataset(tmp_path, videos_per_split=1, splits=("val",))
    dataset = MS3Dataset(root, "val", img_size=224)
    path = dataset.video_files(0).masks[0]
    binary = np.asarray(Image.open(path)) > 0
    palette_mask = Image.fromarray(binary.astype(np.uint8), mode="P")  # indices {0, 1}
    palette_mask.putpalette([0, 0, 0, 255, 255, 255])
    palette_mask.save(path)
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
    assert np.array_equal(sample.masks[0, 0].numpy().astype(bool), binary)
    assert dataset.stats["irregular_masks"] == 1 and str(path) in caplog.text
    with pytest.raises(CorruptFileError, match=str(path)):
        MS3Dataset(root, "val", img_size=224, strict_masks=True)[0]


# ----------------------------------------------------------------------------- AVSS
def avss_sample(dataset: AVSSDataset, subset: str):
    index = next(i for i, e in enumerate(dataset.entries) if e.subset == subset)
    return dataset[index], dataset.entries[index]


@pytest.mark.parametrize(
    ("split", "subset", "vid", "gt", "masks"),
    [
        ("train", "v1s", [1] * 5 + [0] * 5, [1] + [0] * 9, 1),
        ("val", "v1s", [1] * 5 + [0] * 5, [1] + [0] * 9, 5),
        ("test", "v1m", [1] * 5 + [0] * 5, [1] * 5 + [0] * 5, 5),
        ("train", "v1m", [1] * 5 + [0] * 5, [1] * 5 + [0] * 5, 5),
        ("train", "v2", [1] * 10, [1] * 10, 10),
        ("val", "v2", [1] * 10, [1] * 10, 10),
    ],
)
def test_avss_padding_and_official_flags(data_root, split, subset, vid, gt, masks):
    sample, entry = avss_sample(AVSSDataset(data_root, split), subset)
    assert sample.subset == subset and sample.video_id == entry.video_id
    assert sample.frames.shape == (10, 3, 224, 224) and sample.masks.shape == (10, 224, 224)
    assert sample.masks.dtype == torch.int64 and sample.audio.shape == (10, 1, 96, 64)
    assert sample.vid_flags.tolist() == vid and sample.gt_flags.tolist() == gt
    real = sum(vid)
    assert torch.count_nonzero(sample.frames[real:]) == 0  # zero tensors after normalising
    assert torch.count_nonzero(sample.masks[masks:]) == 0
    assert all(sample.masks[t].any() for t in range(masks))
    assert sample.objects == entry.objects and len(sample.objects) >= 1


def test_avss_annotated_flag_rule(data_root):
    sample, _ = avss_sample(AVSSDataset(data_root, "val", gt_flag_rule="annotated"), "v1s")
    assert sample.gt_flags.tolist() == [1] * 5 + [0] * 5
    sample, _ = avss_sample(AVSSDataset(data_root, "train", gt_flag_rule="annotated"), "v1s")
    assert sample.gt_flags.tolist() == [1] + [0] * 9


@pytest.mark.parametrize(("split", "crop"), [("train", True), ("val", False), ("test", False)])
def test_avss_train_crop_vs_val_resize(data_root, split, crop):
    dataset = AVSSDataset(data_root, split)
    sample, entry = avss_sample(dataset, "v2")
    folder = data_root / "AVSS" / "v2" / entry.video_id
    for t in (0, 7):
        np.testing.assert_allclose(
            sample.frames[t].numpy(),
            expected_frame(folder / "frames" / f"{t}.jpg", (224, 224), crop=crop),
            rtol=0,
            atol=1e-6,
        )
        labels = expected_labels(folder / "labels_rgb" / f"{t}.png", (224, 224), crop)
        assert np.array_equal(sample.masks[t].numpy(), labels)


@pytest.mark.parametrize(
    ("size", "resized", "box"),
    [
        ((320, 239), (299, 224), (38, 0)),  # (299 - 224) / 2 = 37.5 rounds half to even
        ((320, 240), (298, 224), (37, 0)),
        ((240, 330), (224, 308), (0, 42)),
        ((224, 224), (224, 224), (0, 0)),
    ],
)
def test_short_side_crop_geometry(size, resized, box):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    out = Geometry("short_side_crop", 224).apply(image, is_mask=False)
    left, top = box
    expected = image.resize(resized, Image.Resampling.BILINEAR).crop(
        (left, top, left + 224, top + 224)
    )
    assert out.size == (224, 224) and np.array_equal(np.asarray(out), np.asarray(expected))


def test_avss_unknown_colours_become_background_and_are_counted(tmp_path, caplog):
    root = make_avss_dataset(tmp_path, subsets=("v2",), splits=("val",))
    dataset = AVSSDataset(root, "val")
    path = dataset.video_files(0).masks[2]
    rgb = np.array(Image.open(path).convert("RGB"))
    rgb[:10, :10] = (1, 2, 3)  # not a palette colour
    Image.fromarray(rgb).save(path)
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
    assert dataset.stats["irregular_masks"] == 1 and dataset.stats["irregular_pixels"] > 0
    assert str(path) in caplog.text
    assert np.array_equal(sample.masks[2].numpy(), expected_labels(path, (224, 224), crop=False))
    with pytest.raises(CorruptFileError, match="outside the 71-class palette"):
        AVSSDataset(root, "val", strict_masks=True)[0]


def test_avss_audio_policies(data_root):
    reference, _ = avss_sample(AVSSDataset(data_root, "val"), "v1m")
    silence, _ = avss_sample(AVSSDataset(data_root, "val", audio_policy="silence"), "v1m")
    assert torch.equal(reference.audio[:5], silence.audio[:5])
    assert torch.count_nonzero(reference.audio[5:]) == 0  # 0.0 rows, as the reference
    torch.testing.assert_close(
        silence.audio[5:], torch.full((5, 1, 96, 64), SILENCE_LOG_MEL), rtol=0, atol=1e-6
    )
    v2, _ = avss_sample(AVSSDataset(data_root, "val"), "v2")
    assert (v2.audio.flatten(1) != 0).any(dim=1).all()  # 10 s: ten real examples
    dataset = AVSSDataset(data_root, "val")
    assert torch.equal(dataset.load_audio(0), dataset[0].audio)


def test_avss_label_file_must_list_71_classes(tmp_path):
    root = make_avss_dataset(tmp_path, subsets=("v1m",), splits=("val",))
    AVSSDataset(root, "val")
    labels = json.loads((root / "label2idx.json").read_text())
    labels.pop("woman")
    (root / "label2idx.json").write_text(json.dumps(labels))
    with pytest.raises(CorruptFileError, match="lists 70 classes, expected 71"):
        AVSSDataset(root, "val")
    (root / "label2idx.json").unlink()  # optional: the readers never need it
    assert len(AVSSDataset(root, "val")) == 1


def test_avss_subset_filter(data_root):
    dataset = AVSSDataset(data_root, "test", subsets=["v2"])
    assert {e.subset for e in dataset.entries} == {"v2"} and len(dataset) == 1
    with pytest.raises(DataError, match="unknown AVSS subsets"):
        AVSSDataset(data_root, "test", subsets=["v3"])


def test_real_avss_metadata_split_counts(shared_dir):
    path = shared_dir / "data/avsbench-samples/AVSS/metadata.csv"
    entries = read_avss_metadata(path)
    assert len(entries) == 11356
    counts = Counter((e.subset, e.split) for e in entries)
    expected = {"v1s": (3452, 740, 740), "v1m": (296, 64, 64), "v2": (4750, 500, 750)}
    for subset, numbers in expected.items():
        assert tuple(counts[(subset, s)] for s in ("train", "val", "test")) == numbers
    assert len({e.video_id for e in entries}) == len(entries)
    assert all(e.video_id == e.youtube_id for e in entries if e.subset == "v1m")
    assert all(e.video_id.startswith(e.youtube_id + "_") for e in entries if e.subset != "v1m")
    first = entries[
        0
    ]  # file order: vid,uid,...: __GOGlHL23s,__GOGlHL23s_4000_9000,...,bird,val,v1s
    assert (first.video_id, first.split, first.subset, first.objects) == (
        "__GOGlHL23s_4000_9000", "val", "v1s", ("bird",)
    )  # fmt: skip
    assert sum(e.objects == ("background",) for e in entries) == 5
    assert max(len(e.objects) for e in entries) <= 5


# ------------------------------------------------------------------- batches, options
def test_collate_and_dataloader(data_root):
    dataset = build_dataset("avss", data_root, "val")
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    batch = next(iter(loader))
    assert isinstance(batch, AVBatch) and len(batch) == 2
    assert batch.frames.shape == (2, 10, 3, 224, 224) and batch.audio.shape == (2, 10, 1, 96, 64)
    assert batch.masks.shape == (2, 10, 224, 224) and batch.gt_flags.shape == (2, 10)
    assert batch.video_ids == [e.video_id for e in dataset.entries[:2]]
    assert batch.to("cpu").frames.data_ptr() == batch.frames.data_ptr()
    # DataLoader workers receive a pickled copy of the dataset.
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[1].frames, dataset[1].frames)
    s4 = S4Dataset(data_root, "val", img_size=224)
    with pytest.raises(DataError, match="different tasks"):
        collate([s4[0], dataset[0]])


def test_build_dataset_options_are_checked(data_root):
    assert isinstance(build_dataset("ms3", data_root, "test", img_size=224), MS3Dataset)
    with pytest.raises(DataError, match="no option crop_size"):
        build_dataset("s4", data_root, "val", crop_size=224)
    with pytest.raises(DataError, match="unknown task"):
        build_dataset("s5", data_root, "val")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        build_dataset("s4", data_root, "valid")


# ----------------------------------------------------------------------------- errors
@pytest.fixture()
def s4_copy(tmp_path) -> Path:
    return make_s4_dataset(tmp_path, videos_per_split=1, splits=("val",), seed=5)


def test_missing_frame_names_the_path(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    frame = dataset.video_files(0).frames[3]
    frame.unlink()
    with pytest.raises(MissingFileError, match=str(frame)):
        dataset[0]


def test_truncated_png_names_the_path(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    mask = dataset.video_files(0).masks[1]
    mask.write_bytes(mask.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match=f"{mask}.*truncated"):
        dataset[0]


def test_grey_s4_mask_follows_pil_convert_1_or_fails_when_strict(s4_copy, caplog):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    path = dataset.video_files(0).masks[0]
    grey = np.asarray(Image.open(path).convert("L")).copy()
    grey[grey == 255] = 200  # an anti-aliased or wrongly encoded mask
    grey[:8, :8] = 100
    Image.fromarray(grey).save(path)
    with caplog.at_level(logging.WARNING):
        sample = dataset[0]
    official = np.asarray(Image.open(path).convert("1")).astype(np.float32)
    assert np.array_equal(sample.masks[0, 0].numpy(), official)
    assert dataset.stats["irregular_masks"] == 1 and "convert('1')" in caplog.text
    with pytest.raises(CorruptFileError, match=f"{path}.*not pure black/white"):
        S4Dataset(s4_copy, "val", img_size=224, strict_masks=True)[0]


def test_wrong_audio_length_in_pkl_names_path_and_shape(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    pkl = dataset.video_files(0).log_mel
    write_logmel_pkl(pkl, torch.zeros(4, 1, 96, 64))
    with pytest.raises(CorruptFileError, match=rf"{pkl}.*\[4, 1, 96, 64\]"):
        dataset[0]


def test_short_wav_is_padded_by_repeating_the_last_second(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224, audio_source="wav")
    wav = dataset.video_files(0).wav
    samples, rate = soundfile.read(str(wav), dtype="int16")
    soundfile.write(str(wav), samples[: int(3.5 * rate)], rate, subtype="PCM_16")
    audio = dataset[0].audio
    assert torch.equal(audio[3], audio[2]) and torch.equal(audio[4], audio[2])
    assert not torch.equal(audio[2], audio[1])


def test_missing_audio_names_both_candidates(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    files = dataset.video_files(0)
    files.log_mel.unlink()
    files.wav.unlink()
    with pytest.raises(MissingFileError) as info:
        dataset[0]
    assert str(files.log_mel) in str(info.value) and str(files.wav) in str(info.value)


def test_avss_audio_longer_than_ten_seconds_is_a_clear_error(tmp_path):
    root = make_avss_dataset(tmp_path, subsets=("v2",), splits=("test",))
    dataset = AVSSDataset(root, "test")
    wav = dataset.video_files(0).wav
    soundfile.write(str(wav), np.zeros(11 * 16000, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=f"{wav}.*11 examples"):
        dataset[0]
    assert AVSSDataset(root, "test", audio_policy="silence")[0].audio.shape == (10, 1, 96, 64)


def test_empty_split_and_bad_csv(tmp_path):
    root = make_s4_dataset(tmp_path, videos_per_split=1, splits=("train",))
    with pytest.raises(DataError, match="no S4 video for split 'test'"):
        S4Dataset(root, "test")
    (root / "s4_meta_data.csv").write_text("name,offset,category\nabc,0,dog_barking\n")
    with pytest.raises(CorruptFileError, match="no column 'split'"):
        S4Dataset(root, "train")


# ------------------------------------------------- bad data: one clear DataError each
def assert_data_error(info, *names: object) -> None:
    """A DataError (what --skip-bad-clips catches) naming every one of ``names``."""
    assert isinstance(info.value, DataError), type(info.value).__mro__
    message = str(info.value)
    assert len(message.splitlines()) == 1
    for name in names:
        assert str(name) in message, (name, message)


def test_nan_log_mel_pkl_is_refused_naming_the_file(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    pkl = dataset.video_files(0).log_mel
    poisoned = load_tensor_pickle(pkl).detach().clone()
    poisoned[2, 0, 5, 7] = float("nan")
    poisoned[3, 0, 0, 0] = float("inf")
    write_logmel_pkl(pkl, poisoned)
    with pytest.raises(NonFiniteError) as info:
        dataset[0]
    assert_data_error(info, pkl, "2 of 30720 values are NaN or infinite")
    with pytest.raises(NonFiniteError):
        dataset.load_audio(0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_float_wav_with_non_finite_samples_is_refused(s4_copy, bad):
    # int16 reading used to turn NaN into 0 and inf into full scale without a word.
    dataset = S4Dataset(s4_copy, "val", img_size=224, audio_source="wav")
    wav = dataset.video_files(0).wav
    samples = np.full((5 * 16000, 2), 0.1, np.float32)
    samples[1000, 1] = bad
    soundfile.write(str(wav), samples, 16000, subtype="FLOAT")
    with pytest.raises(NonFiniteError) as info:
        dataset[0]
    assert_data_error(info, wav, "NaN or infinite")


def test_float_image_with_nan_is_refused(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    frame = dataset.video_files(0).frames[1]
    values = np.zeros((224, 224), np.float32)
    values[3, 4] = float("nan")
    Image.fromarray(values, mode="F").save(frame, format="TIFF")  # PIL opens by content
    with pytest.raises(NonFiniteError) as info:
        dataset[0]
    assert_data_error(info, frame)


@pytest.mark.parametrize("kind", ["zero_bytes", "header_only"])
def test_empty_wav_is_an_empty_audio_file(tmp_path, kind):
    root = make_avss_dataset(tmp_path, subsets=("v1m",), splits=("val",))
    dataset = AVSSDataset(root, "val")
    wav = dataset.video_files(0).wav
    if kind == "zero_bytes":
        wav.write_bytes(b"")
    else:
        soundfile.write(str(wav), np.zeros((0, 2), np.int16), 16000, subtype="PCM_16")
    with pytest.raises(CorruptFileError) as info:
        dataset[0]
    assert_data_error(info, wav, "empty audio file")
    assert "video" not in str(info.value)


def test_undecodable_and_too_long_audio_are_data_errors(tmp_path):
    root = make_avss_dataset(tmp_path, subsets=("v1m",), splits=("val",))
    dataset = AVSSDataset(root, "val")
    wav = dataset.video_files(0).wav
    wav.write_bytes(b"RIFF this is not audio" * 20)
    with pytest.raises(DataError) as info:
        dataset[0]
    assert_data_error(info, wav, "not a readable audio file")
    assert "video" not in str(info.value)
    soundfile.write(str(wav), np.zeros(11 * 16000, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(AudioError) as info:  # still an AudioError for API callers
        dataset[0]
    assert_data_error(info, wav, "11 examples")


def test_frames_of_one_clip_must_have_one_size(s4_copy):
    dataset = S4Dataset(s4_copy, "val", img_size=224)
    files = dataset.video_files(0)
    Image.open(files.frames[3]).resize((200, 150)).save(files.frames[3])
    with pytest.raises(CorruptFileError) as info:
        dataset[0]
    assert_data_error(info, files.frames[3], files.frames[0], "200x150", "224x224")


@pytest.mark.parametrize("task", ["s4", "avss"])
def test_mask_must_have_its_frames_size(tmp_path, task):
    if task == "s4":
        dataset = S4Dataset(make_s4_dataset(tmp_path, videos_per_split=1, splits=("val",)), "val")
    else:
        dataset = AVSSDataset(make_avss_dataset(tmp_path, subsets=("v1m",), splits=("val",)), "val")
    files = dataset.video_files(0)
    mask = files.masks[2]
    width, height = Image.open(files.frames[2]).size
    # Same aspect ratio, twice the size: resized separately it would still be read.
    Image.open(mask).resize((2 * width, 2 * height), Image.Resampling.NEAREST).save(mask)
    with pytest.raises(CorruptFileError) as info:
        dataset[0]
    assert_data_error(info, mask, files.frames[2], f"{2 * width}x{2 * height}")


def test_frames_of_any_common_size_are_resized(tmp_path):
    root = make_s4_dataset(tmp_path, videos_per_split=1, splits=("val",), size=40)
    sample = S4Dataset(root, "val", img_size=64)[0]
    assert sample.frames.shape == (5, 3, 64, 64) and sample.masks.shape == (5, 1, 64, 64)


@pytest.fixture()
def s4_two_splits(tmp_path) -> Path:
    return make_s4_dataset(tmp_path, videos_per_split=1, splits=("val", "test"), seed=7)


def test_csv_row_with_unknown_split_is_refused(s4_two_splits):
    csv_path = s4_two_splits / "s4_meta_data.csv"
    rows = read_csv(csv_path)
    rows[2][3] = "tset"  # the test clip used to vanish: "test 0 0/0 OK"
    write_csv(csv_path, rows)
    for split in ("val", "test"):
        with pytest.raises(CorruptFileError) as info:
            S4Dataset(s4_two_splits, split)
        assert_data_error(info, csv_path, "line 3", "'tset'", "lists every bad row")


def test_csv_duplicate_row_is_refused(s4_two_splits):
    csv_path = s4_two_splits / "s4_meta_data.csv"
    rows = read_csv(csv_path)
    write_csv(csv_path, [*rows, rows[1]])  # was counted twice
    with pytest.raises(CorruptFileError) as info:
        S4Dataset(s4_two_splits, "val")
    assert_data_error(info, csv_path, "line 4", rows[1][0], "line 2")


@pytest.mark.parametrize(
    ("task", "column"), [("s4", "category"), ("s4", "split"), ("ms3", "split"), ("avss", "uid")]
)
def test_csv_without_a_required_column_names_it_and_the_columns_found(tmp_path, task, column):
    makers = {"s4": make_s4_dataset, "ms3": make_ms3_dataset, "avss": make_avss_dataset}
    kwargs = {"subsets": ("v1m",)} if task == "avss" else {}
    root = makers[task](tmp_path, videos_per_split=1, splits=("val",), **kwargs)
    csv_path = root / {"s4": "s4_meta_data.csv", "ms3": "ms3_meta_data.csv"}.get(
        task, "metadata.csv"
    )
    rows = read_csv(csv_path)
    drop = rows[0].index(column)
    write_csv(csv_path, [[v for i, v in enumerate(row) if i != drop] for row in rows])
    left = [name for name in rows[0] if name != column]
    with pytest.raises(CorruptFileError) as info:
        build_dataset(task, root, "val")
    assert_data_error(info, csv_path, f"no column {column!r}", "columns found: " + ", ".join(left))


def test_explicit_entries_choose_the_clips(data_root):
    every = S4Dataset(data_root, "val", img_size=224)
    one = S4Dataset(data_root, "val", img_size=224, entries=every.entries[1:])
    assert len(one) == 1 and one[0].video_id == every.entries[1].video_id
