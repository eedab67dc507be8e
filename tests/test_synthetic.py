"""The synthetic benchmark: clip API, sounds, official layouts, determinism, readers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from avsegformer.audio import waveform_to_examples
from avsegformer.data.classes import AVSS_CLASSES, S4_CATEGORIES, S4_TO_AVSS, avss_palette
from avsegformer.data.safe_pickle import load_logmel_pkl
from avsegformer.data.synthetic import (
    VOCABULARY,
    class_sound,
    generate_clip,
    generate_dataset,
    parse_size,
    parse_splits,
)
from avsegformer.data.synthetic.layout import encode_png
from avsegformer.data.synthetic.sprites import shape_mask
from avsegformer.errors import ConfigError, DataError, OutputExistsError

SPLIT_COUNTS = {"train": 3, "val": 2, "test": 2}


# --------------------------------------------------------------------------- helpers


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _meta(root: Path, split: str, key: str) -> dict:
    return json.loads((root / "synth_meta" / split / f"{key}.json").read_text())


def _sounding_mask(root: Path, split: str, key: str, frame: int) -> np.ndarray:
    """bool [H, W]: the instance masks of the objects sounding at ``frame`` (from synth_meta)."""
    meta = _meta(root, split, key)
    instances = _png(root / "synth_meta" / split / key / "instances" / f"{frame}.png")
    second = int(np.floor(meta["frame_times_s"][frame]))
    return np.isin(instances, meta["sounding"][second])


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode() + hashlib.sha256(data).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "Single-source"
    generate_dataset("s4", out, seed=3, splits=SPLIT_COUNTS)
    return out


@pytest.fixture(scope="module")
def ms3_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "Multi-sources"
    generate_dataset("ms3", out, seed=3, splits=SPLIT_COUNTS)
    return out


@pytest.fixture(scope="module", params=["v1s", "v1m", "v2"])
def avss_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / f"AVSS_{request.param}"
    generate_dataset("avss", out, seed=3, splits=SPLIT_COUNTS, avss_mix={request.param: 1.0})
    return out


# ------------------------------------------------------------------------ vocabulary


def test_vocabulary_maps_onto_official_classes() -> None:
    assert len(VOCABULARY) >= 12
    names = [c.name for c in VOCABULARY]
    assert len(set(names)) == len(names)
    for c in VOCABULARY:
        assert c.name in AVSS_CLASSES and c.avss_id == AVSS_CLASSES.index(c.name)
        assert c.s4_category in S4_CATEGORIES and S4_TO_AVSS[c.s4_category] == c.name
    assert len({c.shape for c in VOCABULARY}) == len(VOCABULARY)
    assert len({c.color for c in VOCABULARY}) == len(VOCABULARY)


def test_class_looks_differ_at_small_size() -> None:
    """At 32 px (an object in a 112 px frame) every pair differs in silhouette or colour."""
    masks = {c.name: shape_mask(c.shape, 32) >= 0.5 for c in VOCABULARY}
    colors = {c.name: np.asarray(c.color, float) for c in VOCABULARY}
    for i, a in enumerate(VOCABULARY):
        for b in VOCABULARY[i + 1 :]:
            iou = (masks[a.name] & masks[b.name]).sum() / (masks[a.name] | masks[b.name]).sum()
            colour_distance = np.linalg.norm(colors[a.name] - colors[b.name])
            assert iou < 0.9 or colour_distance > 80, (a.name, b.name, iou, colour_distance)


# ---------------------------------------------------------------------------- sounds


def _mean_log_mel(name: str, seed: int) -> np.ndarray:
    wave = 0.1 * class_sound(name, 5 * 16000, np.random.default_rng(seed))
    return waveform_to_examples(wave, 16000).numpy()[:, 0]  # [5, 96, 64]


def _band_centres() -> np.ndarray:
    mel = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)[1:-1]
    return 700 * (np.exp(mel / 1127) - 1)  # Hz, 64 bands


def test_class_sounds_have_energy_in_their_band() -> None:
    centres = _band_centres()
    spectra = {c.name: _mean_log_mel(c.name, 0).mean(axis=(0, 1)) for c in VOCABULARY}
    for c in VOCABULARY:
        inside = (centres >= c.band_hz[0]) & (centres <= c.band_hz[1])
        if (~inside).sum() >= 4:
            assert spectra[c.name][inside].mean() > spectra[c.name][~inside].mean() + 0.5, c.name
        # Against every class whose claimed band does not overlap: more energy in own band.
        for other in VOCABULARY:
            disjoint = other.band_hz[1] < c.band_hz[0] or other.band_hz[0] > c.band_hz[1]
            if disjoint:
                assert spectra[c.name][inside].mean() > spectra[other.name][inside].mean() + 0.5, (
                    c.name,
                    other.name,
                )


def test_class_sounds_are_recognisable_per_second() -> None:
    """Nearest mean log-mel spectrum (fit on seeds 0-1) labels 1 s examples of seeds 2-3."""
    names = [c.name for c in VOCABULARY]
    fit = np.stack(
        [np.concatenate([_mean_log_mel(n, s) for s in (0, 1)]).mean(axis=(0, 1)) for n in names]
    )
    correct = total = 0
    for label, name in enumerate(names):
        for seed in (2, 3):
            for example in _mean_log_mel(name, seed):
                guess = int(np.argmin(((fit - example.mean(axis=0)) ** 2).sum(axis=1)))
                correct += guess == label
                total += 1
    assert correct / total >= 0.9


# -------------------------------------------------------------------------- clip API


def test_clip_arrays_and_masks_agree() -> None:
    clip = generate_clip("ms3", seconds=4, fps=10, size=(160, 120), seed=5)
    t = 40
    assert clip.frames.shape == (t, 120, 160, 3) and clip.frames.dtype == np.uint8
    assert clip.instance_masks.shape == (t, 120, 160) and clip.instance_masks.dtype == np.uint8
    assert clip.binary_masks.dtype == bool and clip.semantic_masks.shape == (t, 120, 160)
    assert clip.waveform.shape == (4 * 16000,) and clip.waveform.dtype == np.float32
    assert np.abs(clip.waveform).max() <= 1.0 and np.abs(clip.waveform).max() > 0.01
    assert np.allclose(clip.frame_times, np.arange(t) / 10)
    assert len(clip.sounding) == 4 and 2 <= len(clip.objects) <= 5
    class_of = {o.instance_id: o.avss_id for o in clip.objects}
    for k, second in enumerate(clip.frame_seconds()):
        sounding = clip.sounding[second]
        assert 1 <= len(sounding) <= min(3, len(clip.objects) - 1)
        expected = np.isin(clip.instance_masks[k], sounding)
        np.testing.assert_array_equal(clip.binary_masks[k], expected)
        lut = np.zeros(256, np.uint8)
        for i in sounding:
            lut[i] = class_of[i]
        np.testing.assert_array_equal(clip.semantic_masks[k], lut[clip.instance_masks[k]])
    rgb = clip.semantic_rgb()
    assert rgb.shape == (t, 120, 160, 3)
    np.testing.assert_array_equal(rgb[0], avss_palette()[clip.semantic_masks[0]])
    assert clip.audio(44100).shape[0] == pytest.approx(4 * 44100, abs=2)


def test_clip_is_deterministic_and_independent_of_frame_rate() -> None:
    a = generate_clip("s4", seconds=5, fps=1.0, size=112, seed=9)
    b = generate_clip("s4", seconds=5, fps=1.0, size=112, seed=9)
    c = generate_clip("s4", seconds=5, fps=2.0, size=112, seed=9)  # frames at 0, 0.5, 1, ...
    d = generate_clip("s4", seconds=5, fps=1.0, size=112, seed=10)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.waveform, b.waveform)
    np.testing.assert_array_equal(a.waveform, c.waveform)  # sound and scene do not depend on fps
    assert a.sounding == c.sounding and a.objects == c.objects
    np.testing.assert_array_equal(a.frames[0], c.frames[1])  # t = 0.5 s in both
    np.testing.assert_array_equal(a.instance_masks[4], c.instance_masks[9])  # t = 4.5 s
    assert not np.array_equal(a.frames, d.frames)


def test_switch_clip_changes_its_single_source() -> None:
    clip = generate_clip("switch", seconds=12, fps=2, size=96, seed=1)
    assert all(len(ids) == 1 for ids in clip.sounding)
    assert len(set(clip.sounding)) >= 2
    changes = [i for i in range(1, 12) if clip.sounding[i] != clip.sounding[i - 1]]
    assert changes and all(b - a >= 1 for a, b in zip(changes, changes[1:], strict=False))


def test_s4_clip_is_ambiguous_without_sound() -> None:
    """Every visible object is a vocabulary class (a plausible sounder); 2-4 per clip."""
    vocabulary = {c.name for c in VOCABULARY}
    counts = set()
    for seed in range(20):
        clip = generate_clip("s4", seconds=5, fps=1, size=112, seed=seed)
        counts.add(len(clip.objects))
        assert {o.class_name for o in clip.objects} <= vocabulary
        assert len({o.class_name for o in clip.objects}) == len(clip.objects)
        assert len(set(clip.sounding)) == 1 and len(clip.sounding[0]) == 1
        # The sounding object is visible in most frames.
        assert clip.binary_masks.reshape(5, -1).any(axis=1).sum() >= 4
    assert counts <= {2, 3, 4} and len(counts) >= 2


def test_clip_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown clip kind"):
        generate_clip("s5")
    with pytest.raises(ConfigError, match="unknown scene option"):
        generate_clip("s4", visibles=(2, 3))
    with pytest.raises(ConfigError, match="fps"):
        generate_clip("s4", fps=0)
    clip = generate_clip("s4", seconds=2, fps=1, size=64, visible=(5, 5), sounding=(2, 2))
    assert len(clip.objects) == 5 and all(len(ids) == 2 for ids in clip.sounding)


# ----------------------------------------------------------------------------- splits


def test_parse_splits() -> None:
    assert parse_splits(None, 20) == {"train": 14, "val": 3, "test": 3}
    assert parse_splits(None, 3) == {"train": 1, "val": 1, "test": 1}
    assert parse_splits("train=5,test=2", None) == {"train": 5, "test": 2}
    assert parse_splits("train,test", 10) == {"train": 8, "test": 2}
    assert sum(parse_splits("train=0.5,val=0.25,test=0.25", 9).values()) == 9
    with pytest.raises(DataError):
        parse_splits(None, 2)
    with pytest.raises(DataError):
        parse_splits("train=5,val=1", 7)
    with pytest.raises(DataError):
        parse_splits("training", 5)
    assert parse_size(224, "avss") == (320, 224) and parse_size("64x48", "s4") == (64, 48)


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 3), (1, 1), (224, 320, 3)])
def test_png_encoder_round_trips(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    image = Image.open(io.BytesIO(encode_png(array)))
    assert image.mode == ("L" if len(shape) == 2 else "RGB")
    np.testing.assert_array_equal(np.asarray(image), array)


def test_s4_layout(s4_root: Path) -> None:
    header, rows = _csv(s4_root / "s4_meta_data.csv")
    assert header == ["name", "start", "category", "split"]
    assert [r[3] for r in rows] == ["train"] * 3 + ["val"] * 2 + ["test"] * 2
    expected = {"s4_meta_data.csv", "synth_meta/dataset.json"}
    for name, _, category, split in rows:
        assert len(name) == 11 and category in S4_CATEGORIES
        for t in range(1, 6):
            expected.add(f"s4_data/visual_frames/{split}/{category}/{name}/{name}_{t}.png")
            expected.add(f"synth_meta/{split}/{name}/instances/{t - 1}.png")
        for t in range(1, 2 if split == "train" else 6):
            expected.add(f"s4_data/gt_masks/{split}/{category}/{name}/{name}_{t}.png")
        expected.add(f"s4_data/audio_wav/{split}/{category}/{name}.wav")
        expected.add(f"s4_data/audio_log_mel/{split}/{category}/{name}.pkl")
        expected.add(f"synth_meta/{split}/{name}.json")
        meta = _meta(s4_root, split, name)
        sounding = {c for names in meta["sounding_classes"] for c in names}
        assert len(sounding) == 1 and S4_TO_AVSS[category] in sounding
        assert len(meta["objects"]) >= 2
        assert {o["class"] for o in meta["objects"]} <= {c.name for c in VOCABULARY}
    assert set(_files(s4_root)) == expected


def test_s4_masks_frames_and_audio(s4_root: Path) -> None:
    _, rows = _csv(s4_root / "s4_meta_data.csv")
    for name, _, category, split in rows:
        frame = _png(s4_root / f"s4_data/visual_frames/{split}/{category}/{name}/{name}_1.png")
        assert frame.shape == (224, 224, 3) and frame.dtype == np.uint8
        for t in range(1, 2 if split == "train" else 6):
            mask_path = s4_root / f"s4_data/gt_masks/{split}/{category}/{name}/{name}_{t}.png"
            assert Image.open(mask_path).mode == "L"
            mask = _png(mask_path)
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, _sounding_mask(s4_root, split, name, t - 1))
        wav = s4_root / f"s4_data/audio_wav/{split}/{category}/{name}.wav"
        info = soundfile.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (
            16000,
            1,
            "PCM_16",
            80000,
        )
        samples, _ = soundfile.read(str(wav), dtype="int16")
        pkl = load_logmel_pkl(s4_root / f"s4_data/audio_log_mel/{split}/{category}/{name}.pkl")
        assert pkl.shape == (5, 1, 96, 64) and pkl.dtype == torch.float32
        torch.testing.assert_close(pkl, waveform_to_examples(samples, 16000), rtol=0, atol=0)


def test_ms3_layout(ms3_root: Path) -> None:
    header, rows = _csv(ms3_root / "ms3_meta_data.csv")
    assert header == ["name", "split"]
    expected = {"ms3_meta_data.csv", "synth_meta/dataset.json"}
    changing = 0
    for name, split in rows:
        for t in range(1, 6):
            expected.add(f"ms3_data/visual_frames/{name}/{name}.mp4_{t}.png")
            expected.add(f"ms3_data/gt_masks/{split}/{name}/{name}_{t}.png")
            expected.add(f"synth_meta/{split}/{name}/instances/{t - 1}.png")
            mask = _png(ms3_root / f"ms3_data/gt_masks/{split}/{name}/{name}_{t}.png")
            np.testing.assert_array_equal(mask == 255, _sounding_mask(ms3_root, split, name, t - 1))
        expected.add(f"ms3_data/audio_wav/{split}/{name}.wav")
        expected.add(f"ms3_data/audio_log_mel/{split}/{name}.pkl")
        expected.add(f"synth_meta/{split}/{name}.json")
        meta = _meta(ms3_root, split, name)
        assert 2 <= len(meta["objects"]) <= 5
        assert all(1 <= len(ids) <= 3 for ids in meta["sounding"])
        changing += len({tuple(ids) for ids in meta["sounding"]}) > 1
    assert set(_files(ms3_root)) == expected
    assert changing >= 1  # the sounding set changes over time in some clips


def test_avss_layout(avss_root: Path) -> None:
    subset = avss_root.name.split("_")[1]
    frames_per_clip = 10 if subset == "v2" else 5
    header, rows = _csv(avss_root / "metadata.csv")
    assert header == ["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"]
    assert not (avss_root / "metadata.csv").read_bytes().endswith(b"\n")  # like the real file
    label2idx = json.loads((avss_root / "label2idx.json").read_text())
    assert list(label2idx) == list(AVSS_CLASSES)
    palette = avss_palette()
    for vid, uid, s_min, s_sec, a_obj, split, label in rows:
        assert label == subset
        start_ms = (60 * int(s_min) + int(s_sec)) * 1000
        assert uid == (
            vid if subset == "v1m" else f"{vid}_{start_ms}_{start_ms + frames_per_clip * 1000}"
        )
        folder = avss_root / label / uid
        frames = sorted(p.name for p in (folder / "frames").iterdir())
        assert frames == sorted(f"{t}.jpg" for t in range(frames_per_clip))
        annotated = 1 if (subset == "v1s" and split == "train") else frames_per_clip
        for kind in ("labels_rgb", "labels_semantic"):
            names = sorted(p.name for p in (folder / kind).iterdir())
            assert names == sorted(f"{t}.png" for t in range(annotated))
        objects = {AVSS_CLASSES.index(o) for o in a_obj.split("_")}
        for t in range(annotated):
            frame = _png(folder / "frames" / f"{t}.jpg")
            rgb = _png(folder / "labels_rgb" / f"{t}.png")
            ids = _png(folder / "labels_semantic" / f"{t}.png")
            assert frame.shape == (224, 320, 3) and rgb.shape == (224, 320, 3)
            assert (
                ids.shape == (224, 320)
                and Image.open(folder / "labels_semantic" / f"{t}.png").mode == "L"
            )
            np.testing.assert_array_equal(rgb, palette[ids])  # exact palette colours only
            assert set(np.unique(ids)) <= objects | {0}
            np.testing.assert_array_equal(ids > 0, _sounding_mask(avss_root, split, uid, t))
        info = soundfile.info(str(folder / "audio.wav"))
        assert (info.samplerate, info.subtype, info.frames) == (
            16000,
            "PCM_16",
            frames_per_clip * 16000,
        )


def test_dataset_json(s4_root: Path) -> None:
    record = json.loads((s4_root / "synth_meta" / "dataset.json").read_text())
    assert record["task"] == "s4" and record["seed"] == 3 and record["size"] == [224, 224]
    assert record["splits"] == SPLIT_COUNTS and record["generator_version"] >= 1
    assert [c["name"] for c in record["vocabulary"]] == [c.name for c in VOCABULARY]


# ------------------------------------------------------------------------ determinism


def _without_pkl(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if not k.endswith(".pkl")}


def test_same_seed_same_bytes_any_workers(tmp_path: Path, ms3_root: Path) -> None:
    """Same seed -> identical files (workers 2 vs 1); .pkl tensors identical (their pickle
    bytes embed a memory address). Different seed -> different files."""
    again = tmp_path / "again"
    generate_dataset("ms3", again, seed=3, splits=SPLIT_COUNTS, workers=2)
    first, second = _files(ms3_root), _files(again)
    assert set(first) == set(second)
    assert _digest(_without_pkl(first)) == _digest(_without_pkl(second))
    for name in first:
        if name.endswith(".pkl"):
            torch.testing.assert_close(
                load_logmel_pkl(ms3_root / name), load_logmel_pkl(again / name), rtol=0, atol=0
            )
    other = tmp_path / "other"
    generate_dataset("ms3", other, seed=4, splits=SPLIT_COUNTS, logmel=False)
    different = _without_pkl(_files(other))
    changed = [k for k in different if k.endswith(".png") and different[k] != first.get(k)]
    assert len(changed) > len(different) // 2


# ------------------------------------------------------------------- audio padding


def test_short_audio_is_padded_by_repeating_the_last_example(tmp_path: Path) -> None:
    root = tmp_path / "short"
    generate_dataset("s4", root, seed=1, splits={"train": 2, "test": 1}, short_audio=1.0)
    _, rows = _csv(root / "s4_meta_data.csv")
    for name, _, category, split in rows:
        meta = _meta(root, split, name)
        real = meta["log_mel_examples"]
        assert real in (3, 4) and meta["audio_samples"] < 77040
        info = soundfile.info(str(root / f"s4_data/audio_wav/{split}/{category}/{name}.wav"))
        assert info.frames == meta["audio_samples"]
        pkl = load_logmel_pkl(root / f"s4_data/audio_log_mel/{split}/{category}/{name}.pkl")
        assert pkl.shape == (5, 1, 96, 64)
        for k in range(real, 5):
            torch.testing.assert_close(pkl[k], pkl[real - 1], rtol=0, atol=0)
        assert not torch.equal(pkl[real - 2], pkl[real - 1])


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("task", ["s4", "ms3"])
def test_readers_load_object_datasets(task: str, s4_root: Path, ms3_root: Path) -> None:
    from avsegformer.data import build_dataset, check_dataset

    root = s4_root if task == "s4" else ms3_root
    report = check_dataset(root, task, deep=True, progress=False)
    assert report.ok, report.format_text()
    for split, count in SPLIT_COUNTS.items():
        dataset = build_dataset(task, root, split, img_size=224)
        assert len(dataset) == count
        sample = dataset[0]
        assert tuple(sample.frames.shape) == (5, 3, 224, 224)
        assert tuple(sample.audio.shape) == (5, 1, 96, 64)
        key = sample.video_id
        annotated = 1 if (task == "s4" and split == "train") else 5
        for t in range(annotated):
            expected = _sounding_mask(root, split, key, t)
            np.testing.assert_array_equal(sample.masks[t, 0].numpy() == 1, expected)


def test_readers_load_avss(avss_root: Path) -> None:
    from avsegformer.data import build_dataset, check_dataset

    report = check_dataset(avss_root, "avss", deep=True, progress=False)
    assert report.ok, report.format_text()
    for split, count in SPLIT_COUNTS.items():
        dataset = build_dataset("avss", avss_root, split)
        assert len(dataset) == count
        sample = dataset[0]
        assert tuple(sample.frames.shape) == (10, 3, 224, 224)
        labels = sample.masks.numpy()
        assert set(np.unique(labels)) <= {0} | {AVSS_CLASSES.index(o) for o in sample.objects}
        assert labels[0].any()  # the first frame always shows a sounding object's label


# ------------------------------------------------------------------------------ CLI


def test_cli_writes_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from avsegformer.cli import main

    out = tmp_path / "cli"
    args = [
        "synth",
        "--task",
        "s4",
        "--out",
        str(out),
        "--videos",
        "3",
        "--size",
        "64",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "wrote 3 synthetic S4 videos" in capsys.readouterr().out
    assert len(_csv(out / "s4_meta_data.csv")[1]) == 3
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--no-logmel"]) == 0
    assert not list(out.rglob("*.pkl"))
    assert not list(tmp_path.glob(".cli.*"))  # no temporary folders left behind
    with pytest.raises(OutputExistsError):
        generate_dataset("s4", out, videos=3)


def test_a_short_training_run_on_synthetic_data_lowers_the_loss(
    s4_root: Path, tmp_path: Path
) -> None:
    from avsegformer.engine.trainer import Trainer, TrainOptions
    from avsegformer.zoo import get_config

    # 3 clips, batch 1 (one labelled frame each), 15 steps on the same clips.
    config = get_config("tiny_s4").with_overrides(
        [
            "img_size=64",
            "batch_size=1",
            "eval_batch_size=1",
            "epochs=5",
            "num_workers=0",
            "lr=1e-3",
        ]  # fmt: skip
    )
    options = TrainOptions(
        s4_root, tmp_path, progress=False, log_every_steps=1, val_split="", save_every_steps=0
    )
    Trainer(config, options).fit()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 15
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.8 * first, f"loss did not go down: {first:.4f} -> {last:.4f}"
