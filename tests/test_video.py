"""Video/audio decoding and writing (avsegformer.data.video) on videos made by tests/videos.py.

The test videos encode time in their content (frame index as stripes, audio tones that
start at known seconds), so frame choice and audio alignment are checked, not assumed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import av
import numpy as np
import pytest
import soxr

from avsegformer.data.video import (
    AVSBENCH_FRAME_OFFSET,
    VideoWriter,
    _audio_frame_to_float,
    _layout_for_output,
    iter_all_frames,
    iter_audio,
    iter_frames_at,
    probe_video,
    read_audio_track,
    sample_times,
    stereo_downmix_matrix,
)
from avsegformer.errors import (
    CorruptVideoError,
    EmptyVideoError,
    MissingFileError,
    NoAudioStreamError,
    NotAVideoError,
    OutputExistsError,
    VideoError,
)
from videos import (
    decode_index,
    make_audio_only,
    make_empty_file,
    make_text_file,
    make_truncated,
    make_vfr_video,
    make_video,
    make_video_without_frames,
    tone_onset,
)

ONSET_TOLERANCE_S = 0.010


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All test files, made once per module (about 2 s)."""
    d = tmp_path_factory.mktemp("media")
    files = {
        "h264_25": make_video(d / "h264_25.mp4", 4.0, 25, (320, 240), "stereo", 44100, "h264",
                              tone_schedule=[(3.0, 440.0)]),
        "mpeg4_30_odd": make_video(d / "mpeg4_30_odd.mp4", 4.0, 30, (321, 239), "mono", 48000,
                                   "mpeg4", tone_schedule=[(3.0, 440.0)]),
        "h264_30_odd": make_video(d / "h264_30_odd.mp4", 2.0, 30, (321, 239), None, codec="h264"),
        "silent": make_video(d / "silent.mp4", 2.0, 25, (160, 120), None),
        "late_audio": make_video(d / "late_audio.mp4", 4.0, 25, (160, 120), "stereo", 48000,
                                 audio_start=0.5, audio_seconds=3.5, tone_schedule=[(3.0, 440.0)]),
        "early_audio": make_video(d / "early_audio.mp4", 3.5, 25, (160, 120), "stereo", 48000,
                                  video_start=0.5, tone_schedule=[(3.5, 440.0)],
                                  audio_seconds=4.0),
        "offset_ts": make_video(d / "offset.ts", 2.0, 25, (160, 120), "stereo", 48000,
                                video_start=1.4, tone_schedule=[(2.4, 440.0)],
                                audio_start=1.4),
        "pcm_mkv": make_video(d / "pcm.mkv", 2.0, 25, (160, 120), "stereo", 8000, "mpeg4",
                              audio_codec="pcm_s16le", tone_schedule=[(1.0, 440.0)]),
        "rotated": make_video(d / "rotated.mp4", 1.0, 25, (192, 96), None, rotation=90),
        "faststart": make_video(d / "faststart.mp4", 4.0, 25, (320, 240), "stereo", 44100,
                                faststart=True, video_bitrate=2_000_000),
        "audio_only": make_audio_only(d / "audio_only.m4a"),
        "text": make_text_file(d / "notes.txt"),
        "empty": make_empty_file(d / "empty.mp4"),
    }  # fmt: skip
    files["vfr"], _ = make_vfr_video(d / "vfr.mp4", audio_layout=None)
    files["cut_index"] = make_truncated(files["h264_25"], d / "cut_index.mp4", 0.5)
    files["cut_data"] = make_truncated(files["faststart"], d / "cut_data.mp4", 0.5)
    return files


def vfr_times() -> list[float]:
    """The frame times make_vfr_video uses (recomputed to keep the fixture simple)."""
    intervals = [1 / 30, 1 / 10, 1 / 15, 0.1 + 1 / 30]
    times, t, k = [], 0.0, 0
    while t < 4.0:
        times.append(t)
        t += intervals[k % 4]
        k += 1
    return times


# ---------------------------------------------------------------------------------------
# Bad inputs: the right exception, a one-line message that starts with the file


@pytest.mark.parametrize(
    ("key", "error", "words"),
    [
        ("text", NotAVideoError, "not a video file"),
        ("empty", EmptyVideoError, "zero-length video"),
        ("audio_only", NotAVideoError, "no video stream"),
        ("cut_index", CorruptVideoError, "truncated or corrupt: moov atom not found"),
        ("cut_data", CorruptVideoError, "truncated or corrupt"),
    ],
)
def test_bad_files_raise_named_errors(media, key, error, words) -> None:
    path = media[key]
    calls = [probe_video, iter_all_frames, lambda p: iter_frames_at(p, [0.0])]
    if key == "cut_data":  # opens fine: the iterators fail after the good frames (below)
        calls = [probe_video]
    for call in calls:
        with pytest.raises(error) as caught:
            call(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and words in message
        assert "\n" not in message


def test_video_stream_without_frames(tmp_path: Path) -> None:
    path = make_video_without_frames(tmp_path / "hollow.mkv")
    with pytest.raises(EmptyVideoError, match=r"hollow\.mkv: zero-length video"):
        probe_video(path)
    with pytest.raises(EmptyVideoError, match=r"hollow\.mkv: zero-length video"):
        list(iter_all_frames(path))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"nope\.mp4: no such file"):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(MissingFileError):
        iter_audio(tmp_path / "nope.mp4")
    with pytest.raises(NotAVideoError, match="is a directory"):
        probe_video(tmp_path)


def test_errors_are_video_errors() -> None:
    for error in (CorruptVideoError, EmptyVideoError, NotAVideoError, NoAudioStreamError):
        assert issubclass(error, VideoError)


def test_truncated_file_yields_frames_then_raises(media) -> None:
    seen: list[int] = []
    with pytest.raises(CorruptVideoError, match=r"cut_data\.mp4: truncated or corrupt"):
        for _t, image in iter_all_frames(media["cut_data"]):
            seen.append(decode_index(image))
    assert 10 < len(seen) < 100  # some, not all, of the 100 frames
    assert seen == list(range(len(seen)))  # the good ones are right


def test_truncated_file_audio_yields_samples_then_raises(media) -> None:
    total = 0
    with pytest.raises(CorruptVideoError, match="truncated or corrupt audio"):
        for chunk in iter_audio(media["cut_data"], chunk_seconds=0.5):
            total += len(chunk)
    assert 0.5 * 16000 < total < 4.0 * 16000


def test_no_audio_stream(media, caplog) -> None:
    with pytest.raises(NoAudioStreamError) as caught:
        iter_audio(media["silent"])
    # The API's words for the fix; the command line's (--allow-silent) ride along.
    assert str(caught.value) == (
        f"{media['silent']}: no audio stream (pass allow_silent=True to use silence)"
    )
    assert caught.value.cli_text() == (
        f"{media['silent']}: no audio stream (pass --allow-silent to use silence)"
    )
    with caplog.at_level(logging.WARNING, logger="avsegformer.data.video"):
        samples, rate = read_audio_track(media["silent"], allow_silent=True)
    assert rate == 16000 and samples.shape == (32000,) and samples.dtype == np.float32
    assert not samples.any()
    assert "no audio stream" in caplog.text


# ---------------------------------------------------------------------------------------
# Probing


def test_probe_cfr_with_audio(media) -> None:
    info = probe_video(media["mpeg4_30_odd"])
    assert (info.width, info.height, info.display_size) == (321, 239, (321, 239))
    assert info.fps == pytest.approx(30) and info.num_frames == 120
    assert info.duration == pytest.approx(4.0, abs=1e-6)
    assert info.codec == "mpeg4" and info.variable_frame_rate is False
    assert info.rotation == 0 and info.start_time == 0
    assert info.audio is not None and info.has_audio
    assert (info.audio.sample_rate, info.audio.channels, info.audio.codec) == (48000, 1, "aac")
    assert info.audio.duration == pytest.approx(4.0, abs=1e-3)


def test_probe_odd_h264_without_audio(media) -> None:
    info = probe_video(media["h264_30_odd"])
    assert (info.codec, info.width, info.height, info.num_frames) == ("h264", 321, 239, 60)
    assert info.audio is None and not info.has_audio


def test_probe_variable_frame_rate(media) -> None:
    times = vfr_times()
    for scan in (None, True):
        info = probe_video(media["vfr"], scan=scan)
        assert info.variable_frame_rate is True
        assert info.num_frames == len(times)
    assert probe_video(media["h264_25"], scan=True).variable_frame_rate is False


def test_probe_mkv_without_header_counts_scans(media) -> None:
    info = probe_video(media["pcm_mkv"])  # matroska states neither frame count nor duration
    assert info.num_frames == 50 and info.duration == pytest.approx(2.0, abs=1e-3)
    assert info.audio is not None and info.audio.codec == "pcm_s16le"


def test_probe_rotation_and_start_time(media) -> None:
    rotated = probe_video(media["rotated"])
    assert rotated.rotation == 90 and rotated.display_size == (96, 192)
    late = probe_video(media["offset_ts"])  # MPEG-TS keeps absolute timestamps
    assert late.start_time == pytest.approx(1.4, abs=1e-3)
    assert late.duration == pytest.approx(2.0, abs=1e-3)
    # The audio stream starts one AAC priming frame (1024 samples) before its first sample.
    assert late.audio is not None
    assert late.audio.start == pytest.approx(-1024 / 48000, abs=1e-3)


# ---------------------------------------------------------------------------------------
# Frame sampling


def test_sample_times_convention() -> None:
    assert sample_times(5.0) == [k + 15 / 16 for k in range(5)]
    assert sample_times(4.5) == [k + 15 / 16 for k in range(5)]  # partial last second
    assert sample_times(2.0, fps=2, offset=0.5) == [0.25, 0.75, 1.25, 1.75]
    assert sample_times(0.0) == []
    with pytest.raises(ValueError):
        sample_times(5.0, offset=1.0)


@pytest.mark.parametrize(("key", "fps"), [("h264_25", 25), ("mpeg4_30_odd", 30)])
def test_one_frame_per_second_matches_avsbench_indices(media, key, fps) -> None:
    info = probe_video(media[key])
    picked = list(iter_frames_at(media[key], sample_times(info.duration)))
    assert len(picked) == 4
    for second, (t_req, t_act, image) in enumerate(picked):
        expected = int(second * fps + AVSBENCH_FRAME_OFFSET * fps)  # preprocess_s4.py rule
        assert decode_index(image) == expected
        assert t_act == pytest.approx(expected / fps, abs=1e-6)
        assert t_req == second + AVSBENCH_FRAME_OFFSET
        assert image.dtype == np.uint8 and image.shape == (info.height, info.width, 3)


def test_arbitrary_times_pick_the_frame_on_screen(media) -> None:
    times = [-1.0, 0.0, 1 / 30, 0.5 - 1e-4, 0.5, 1 / 3, 1.0, 1.99, 5.0, 9.0]
    expected = [0, 0, 1, 14, 15, 10, 30, 59, 59, 59]  # clamped at both ends
    times_sorted = sorted(times)
    picked = list(iter_frames_at(media["h264_30_odd"], times_sorted))
    got = {t: decode_index(image) for t, _, image in picked}
    assert [got[t] for t in times] == expected


def test_repeated_times_give_independent_arrays(media) -> None:
    a, b = list(iter_frames_at(media["h264_25"], [1.0, 1.0]))
    assert np.array_equal(a.image, b.image) and a.image is not b.image


def test_decreasing_times_are_refused(media) -> None:
    with pytest.raises(ValueError, match="must not decrease"):
        list(iter_frames_at(media["h264_25"], [1.0, 0.5]))


def test_variable_frame_rate_sampling_uses_timestamps(media) -> None:
    times = vfr_times()
    requests = list(np.arange(0.0, 3.9, 0.037))
    for t_req, t_act, image in iter_frames_at(media["vfr"], requests):
        index = max(i for i, t in enumerate(times) if t <= t_req + 1e-6)
        assert decode_index(image) == index, t_req
        assert t_act == pytest.approx(times[index], abs=1e-4)
    all_frames = list(iter_all_frames(media["vfr"]))
    assert [decode_index(f.image) for f in all_frames] == list(range(len(times)))
    assert np.allclose([f.t for f in all_frames], times, atol=1e-4)


def test_non_zero_start_time_is_the_origin(media) -> None:
    picked = list(iter_frames_at(media["offset_ts"], [0.0, 0.5, 1.0]))
    assert [decode_index(p.image) for p in picked] == [0, 12, 25]
    assert [p.t_actual for p in picked] == pytest.approx([0.0, 0.48, 1.0], abs=1e-3)


def test_rotation_is_applied(media) -> None:
    (upright,) = [p.image for p in iter_frames_at(media["rotated"], [0.0])]
    assert upright.shape == (192, 96, 3)
    # Undo the 90° counter-clockwise display rotation to read the stripes again.
    assert decode_index(np.rot90(upright, k=-1)) == 0
    (raw,) = [p.image for p in iter_frames_at(media["rotated"], [0.0], autorotate=False)]
    assert raw.shape == (96, 192, 3) and decode_index(raw) == 0


# ---------------------------------------------------------------------------------------
# Audio


@pytest.mark.parametrize(
    ("rate", "layout", "codec"),
    [
        (44100, "mono", "h264"),
        (48000, "stereo", "mpeg4"),
        (8000, "5.1", "h264"),
        (96000, "stereo", "h264"),
        (44100, "5.1", "mpeg4"),
    ],
)
def test_audio_rates_and_layouts_resample_to_16k_in_sync(tmp_path, rate, layout, codec) -> None:
    path = make_video(tmp_path / "a.mp4", 4.0, 25, (64, 48), layout, rate, codec,
                      tone_schedule=[(3.0, 440.0)])  # fmt: skip
    samples, out_rate = read_audio_track(path)
    assert out_rate == 16000 and samples.dtype == np.float32 and samples.ndim == 1
    # 4 s at the source rate -> 4 s at 16 kHz; soxr rounds the length to +-1 sample.
    assert abs(len(samples) - 4 * 16000) <= 1
    assert abs(tone_onset(samples, 16000) - 3.0) < ONSET_TOLERANCE_S
    assert np.abs(samples[: int(2.9 * 16000)]).max() < 0.01  # silence before the tone
    # Mono = plain mean of all channels. Every channel carries the tone, but AAC codes the
    # 5.1 LFE channel only below ~120 Hz, so a 440 Hz tone averages to 5/6 of 0.5 there.
    expected = 0.5 * 5 / 6 if layout == "5.1" else 0.5
    assert np.abs(samples[int(3.2 * 16000) :]).max() == pytest.approx(expected, abs=0.03)


def test_audio_keeps_channels_when_asked(media) -> None:
    samples, rate = read_audio_track(media["h264_25"], mono=False)
    assert samples.shape[1] == 2 and abs(samples.shape[0] - 4 * 16000) <= 1
    native, native_rate = read_audio_track(media["h264_25"], target_rate=None, mono=False)
    assert native_rate == 44100 and native.shape == (4 * 44100, 2)


def test_streaming_chunks_equal_one_shot_resampling(media) -> None:
    native, native_rate = read_audio_track(media["h264_25"], target_rate=None)
    one_shot = soxr.resample(native, native_rate, 16000)
    chunks = list(iter_audio(media["h264_25"], chunk_seconds=0.3))
    assert all(len(c) == 4800 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4800
    streamed = np.concatenate(chunks)
    assert len(streamed) == len(one_shot)
    np.testing.assert_allclose(streamed, one_shot, atol=1e-6)


def test_late_audio_is_padded_with_silence(media) -> None:
    info = probe_video(media["late_audio"])
    assert info.audio is not None and info.audio.start == pytest.approx(0.5, abs=0.03)
    samples, _ = read_audio_track(media["late_audio"])
    # 0.5 s of zeros + 3.5 s of audio; mp4 stores the 0.5 s delay as an edit list in
    # milliseconds, so the file itself places the audio up to 1 ms (16 samples) off.
    assert abs(len(samples) - 4 * 16000) <= 16
    assert not samples[: int(0.45 * 16000)].any()
    assert abs(tone_onset(samples, 16000) - 3.0) < ONSET_TOLERANCE_S


def test_early_audio_is_cut_at_the_first_frame(media) -> None:
    # Audio starts 0.5 s before the first frame; the tone sounds 3.0 s after that frame.
    samples, _ = read_audio_track(media["early_audio"])
    assert abs(len(samples) - 3.5 * 16000) <= 2
    assert abs(tone_onset(samples, 16000) - 3.0) < ONSET_TOLERANCE_S


def test_mpegts_offsets_align(media) -> None:
    samples, _ = read_audio_track(media["offset_ts"])
    assert abs(tone_onset(samples, 16000) - 1.0) < ONSET_TOLERANCE_S


def test_packed_pcm_in_matroska(media) -> None:
    samples, rate = read_audio_track(media["pcm_mkv"], target_rate=None)
    assert rate == 8000 and len(samples) == 16000
    t = np.arange(8000) / 8000
    expected = 0.5 * np.sin(2 * np.pi * 440 * t)
    np.testing.assert_allclose(samples[8000:], expected, atol=2e-4)  # int16 quantisation


@pytest.mark.parametrize("fmt", ["s16", "s16p", "s32", "s32p", "flt", "fltp", "dbl", "u8"])
def test_sample_formats_convert_and_downmix_by_mean(fmt) -> None:
    left, right = 0.5, -0.25
    planar = fmt.endswith("p") or fmt in {"fltp", "dblp"}
    scale = {"s16": 2**15, "s32": 2**31, "u8": 128}.get(fmt.rstrip("p"))
    values = np.array([[left] * 4, [right] * 4])
    if scale is None:
        data = values.astype(np.float32 if fmt.startswith("flt") else np.float64)
    elif fmt.startswith("u8"):
        data = (values * scale + 128).astype(np.uint8)
    else:
        data = (values * scale).astype(np.int16 if fmt.startswith("s16") else np.int32)
    data = data if planar else data.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
    converted = _audio_frame_to_float(frame)
    assert converted.dtype == np.float32 and converted.shape == (2, 4)
    np.testing.assert_allclose(converted[0], left, atol=1e-6)
    np.testing.assert_allclose(converted[1], right, atol=1e-6)
    mono = _layout_for_output(converted, mono=True)  # the downmix iter_audio applies
    assert mono.dtype == np.float32 and mono.shape == (4,)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)
    assert _layout_for_output(converted, mono=False).shape == (4, 2)


def test_audio_only_file_reads_from_its_own_start(media) -> None:
    samples, _ = read_audio_track(media["audio_only"])
    assert abs(len(samples) - 2 * 16000) <= 1
    assert abs(tone_onset(samples, 16000) - 1.0) < ONSET_TOLERANCE_S


# ---------------------------------------------------------------------------------------
# Writing


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_written_video_reads_back(tmp_path, codec) -> None:
    out = tmp_path / "out.mp4"
    rate, seconds, fps = 48000, 2.0, 25
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * (t >= 1.0)).astype(np.float32)
    with VideoWriter(out, fps, (321, 239), audio_rate=rate, audio_layout="stereo",
                     codec=codec) as writer:  # fmt: skip
        for i in range(int(seconds * fps)):
            writer.write_frame(_index_frame(i, (321, 239)))
            if i % 5 == 4:  # interleave audio with the frames, in 0.2 s pieces
                piece = tone[(i - 4) * rate // fps : (i + 1) * rate // fps]
                writer.write_audio(np.stack([piece, piece], axis=1))
    info = probe_video(out)
    assert info.codec == ("h264" if codec is None else "mpeg4")
    assert (info.width, info.height) == (322, 240)  # padded to even
    assert info.num_frames == 50 and info.fps == pytest.approx(25)
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    assert info.audio is not None and info.audio.duration == pytest.approx(2.0, abs=0.03)
    frames = [decode_index(f.image[:239, :321]) for f in iter_all_frames(out)]
    assert frames == list(range(50))
    samples, _ = read_audio_track(out)
    assert abs(tone_onset(samples, 16000) - 1.0) < ONSET_TOLERANCE_S
    assert _leftovers(tmp_path) == []


def _index_frame(i: int, size: tuple[int, int]) -> np.ndarray:
    from videos import encode_index_image

    return encode_index_image(i, size)


@pytest.mark.parametrize("copy", [None, False])
def test_overlay_video_carries_the_original_sound(media, tmp_path, copy) -> None:
    source = media["h264_25"]
    info = probe_video(source)
    out = tmp_path / "overlay.mp4"
    with VideoWriter(out, info.fps, info.display_size) as writer:
        assert writer.mux_audio_from(source, copy=copy)
        for t, image in iter_all_frames(source):
            writer.write_frame(255 - image, t)
    written = probe_video(out)
    assert written.audio is not None
    assert written.audio.codec == "aac" and written.audio.channels == 2
    assert written.audio.duration == pytest.approx(4.0, abs=0.03)
    assert written.num_frames == 100
    original, _ = read_audio_track(source)
    copied, _ = read_audio_track(out)
    assert abs(len(copied) - len(original)) <= 16
    assert abs(tone_onset(copied, 16000) - 3.0) < ONSET_TOLERANCE_S


def test_overlay_of_shifted_sources_keeps_sync(media, tmp_path) -> None:
    for key, onset in (("early_audio", 3.0), ("offset_ts", 1.0), ("pcm_mkv", 1.0)):
        source = media[key]
        info = probe_video(source)
        out = tmp_path / f"{key}.mp4"
        with VideoWriter(out, info.fps, info.display_size) as writer:
            writer.mux_audio_from(source)
            for t, image in iter_all_frames(source):
                writer.write_frame(image, t)
        samples, _ = read_audio_track(out)
        assert abs(tone_onset(samples, 16000) - onset) < ONSET_TOLERANCE_S, key
        first = next(iter_frames_at(out, [0.0]))
        assert decode_index(first.image) == 0 and first.t_actual == 0.0


def test_variable_frame_rate_survives_writing(media, tmp_path) -> None:
    out = tmp_path / "vfr_out.mp4"
    with VideoWriter(out, probe_video(media["vfr"]).fps, (320, 240)) as writer:
        for t, image in iter_all_frames(media["vfr"]):
            writer.write_frame(image, t)
    frames = list(iter_all_frames(out))
    assert [decode_index(f.image) for f in frames] == list(range(len(vfr_times())))
    assert np.allclose([f.t for f in frames], vfr_times(), atol=1e-4)


def test_failed_write_leaves_nothing(tmp_path) -> None:
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(out, 25, (64, 48)) as writer:
        writer.write_frame(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_writer_refuses_bad_frames_and_existing_files(tmp_path) -> None:
    out = tmp_path / "x.mp4"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=r"x\.mp4: exists already"):
        VideoWriter(out, 25, (64, 48))
    with VideoWriter(out, 25, (64, 48), overwrite=True) as writer:
        with pytest.raises(ValueError, match=r"uint8 \[48, 64, 3\]"):
            writer.write_frame(np.zeros((48, 63, 3), np.uint8))
        writer.write_frame(np.zeros((48, 64, 3), np.uint8))
    assert probe_video(out).num_frames == 1


def test_mux_audio_from_a_silent_source(media, tmp_path) -> None:
    with VideoWriter(tmp_path / "a.mp4", 25, (64, 48)) as writer:
        with pytest.raises(NoAudioStreamError, match="silent.mp4: no audio stream"):
            writer.mux_audio_from(media["silent"])
        assert writer.mux_audio_from(media["silent"], missing_ok=True) is False
        writer.write_frame(np.zeros((48, 64, 3), np.uint8))
    assert probe_video(tmp_path / "a.mp4").audio is None


def test_constant_rate_timestamps_default_to_index_over_fps(tmp_path) -> None:
    out = tmp_path / "ntsc.mp4"
    fps = 30000 / 1001
    with VideoWriter(out, fps, (64, 48)) as writer:
        for i in range(30):
            writer.write_frame(_index_frame(i, (64, 48)))
    frames = list(iter_all_frames(out))
    assert np.allclose([f.t for f in frames], np.arange(30) / fps, atol=2e-5)
    assert probe_video(out).fps == pytest.approx(fps, rel=1e-4)
    assert math.isclose(probe_video(out).duration, 30 / fps, abs_tol=1e-3)


@pytest.mark.parametrize(("layout", "channels"), [("7.1", 8), ("octagonal", 8), ("5.0", 5)])
def test_written_audio_of_any_channel_count(tmp_path, layout, channels) -> None:
    """PyAV's AudioFrame.from_ndarray raised IndexError on 8 planar channels."""
    rate = 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    path = tmp_path / "out.mp4"
    with VideoWriter(path, fps=25, size=(64, 48), audio_rate=rate, audio_layout=layout) as out:
        out.write_audio(np.tile(tone[:, None], (1, channels)))
        for i in range(25):
            out.write_frame(np.zeros((48, 64, 3), np.uint8), i / 25)
    sound, got_rate = read_audio_track(path, None, mono=False)
    assert got_rate == rate and sound.shape[1] == channels
    # The tone in every channel (AAC low-passes an LFE channel: at most one is quieter).
    assert (np.abs(sound).max(axis=0) > 0.3).sum() >= channels - 1


def test_stereo_downmix_keeps_sides_and_centre_and_drops_lfe() -> None:
    matrix = stereo_downmix_matrix(av.AudioLayout("5.1"))  # FL FR FC LFE BL BR
    assert matrix.shape == (2, 6)
    assert matrix[:, 3].tolist() == [0.0, 0.0]  # LFE
    assert matrix[0, 0] > 0 and matrix[0, 1] == 0 and matrix[1, 1] > 0 and matrix[1, 0] == 0
    assert matrix[0, 2] == matrix[1, 2] > 0  # the centre goes to both sides
    assert np.allclose(matrix.sum(axis=1), 1.0)  # no clipping
