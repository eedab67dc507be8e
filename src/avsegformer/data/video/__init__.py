"""Video and audio files through PyAV (FFmpeg): probe, sample frames, stream audio, write.

One module per task, all re-exported here: :mod:`.probe` (opening files, probing,
recognising damaged files), :mod:`.frames` (sampling times, frame selection),
:mod:`.sound` (audio decoding, alignment to the video clock, resampling) and
:mod:`.writer` (encoding and muxing). The conventions below hold in all of them.

Everything here streams: memory does not grow with the length of the video.

Time convention (every function and every timestamp in this module)
    Times are seconds on the *video clock*: ``t = 0`` is the presentation time of the
    video stream's first frame (the stream's ``start_time``; the container's, if the
    stream has none). Files whose timestamps start elsewhere (MPEG-TS starts near 1.4 s,
    edited mp4s at any offset) are shifted so that their first frame is at 0.

Frames
    The frame *displayed at* time ``t`` is the last frame whose presentation timestamp
    is <= ``t`` (+1 µs, so that a float like ``1/3`` picks the frame at exactly 1/3 s).
    Selection uses each frame's own pts, so variable frame rates and non-zero start
    times need no special handling. Times before the first frame get the first frame;
    times after the last frame get the last frame (the AVSBench extraction clamps frame
    indices the same way). Frames are uint8 ``[H, W, 3]`` RGB, rotated upright when the
    file carries a display-matrix rotation (``autorotate=True``, multiples of 90°).

Audio
    Audio sample ``n`` (at the output rate) is the sound at ``t = n / rate`` on the
    video clock: an audio stream that starts after the first frame is preceded by
    zeros, one that starts before it loses the samples before ``t = 0``; gaps in the
    audio timestamps (> 2 ms) are filled with zeros and overlaps dropped, so that sync
    holds for the whole file. The track ends where the audio stream ends (it can be
    shorter or longer than the video); the encoder padding at the end of AAC streams is
    trimmed to the stream's declared duration. Samples are float32 in [-1, 1]
    (integer formats scaled by 1/2^(bits-1)). Mono is the plain mean of all channels
    (LFE included), as the VGGish reference does with ``np.mean(data, axis=1)``.
    Resampling uses soxr (see :func:`iter_audio` for why).

Damaged files
    A truncated or corrupt stream yields every frame / sample decoded before the damage
    and then raises :class:`~avsegformer.errors.CorruptVideoError` naming the file and
    FFmpeg's reason: a clear error beats a silently shortened result, and callers that
    want the partial output already have it. :func:`probe_video` raises it up front.
    A cut is seen through decoder errors or, since FFmpeg's threaded decoders and most
    demuxers stop quietly at a cut, through the container index (mp4/mov sample tables
    pointing past the end of the file); a cut index-less stream (MPEG-TS) just ends.

Writing
    :class:`VideoWriter` encodes H.264 (libx264, yuv420p) or, without libx264, MPEG-4
    part 2, into a temporary file in the destination folder that is renamed on success
    and deleted on failure. yuv420p needs even sizes: odd widths/heights are padded by
    one replicated edge column/row (the file is then one pixel wider/taller). Frames
    keep the timestamps they are given (a variable frame rate survives the round trip);
    frames written without a timestamp are placed at ``index / fps``. mp4 stores the
    step between frames in 32 bits: H.264 is written without B-frames (their pts - dts
    offsets overflow across long gaps) and long or sparse videos get a coarser time base
    (:func:`write_time_base`), so frames hours apart are written, not refused by FFmpeg
    ("Not yet implemented in FFmpeg, patches welcome") after the work.
    Sound of any channel count is read and written (PyAV's own array conversions break
    at 8 planar channels, so planes are read one by one); AAC keeps the layout when it
    has one (up to 16 channels), else the sound is mixed down to stereo.
"""

from __future__ import annotations

from .frames import (
    AVSBENCH_FRAME_OFFSET,
    TIME_EPSILON,
    SampledFrame,
    TimedFrame,
    iter_all_frames,
    iter_frames_at,
    sample_times,
)
from .probe import AudioInfo, PathLike, VideoInfo, probe_video
from .sound import (
    AUDIO_GAP_TOLERANCE_S,
    _audio_frame_to_float,  # noqa: F401 - imported from here by tests
    _layout_for_output,  # noqa: F401 - imported from here by tests
    iter_audio,
    read_audio_track,
)
from .writer import (
    MAX_WRITE_STEP_TICKS,
    WRITE_TIME_BASE,
    VideoWriter,
    aac_accepts,
    stereo_downmix_matrix,
    write_time_base,
)

__all__ = [
    "AUDIO_GAP_TOLERANCE_S",
    "AVSBENCH_FRAME_OFFSET",
    "MAX_WRITE_STEP_TICKS",
    "TIME_EPSILON",
    "WRITE_TIME_BASE",
    "AudioInfo",
    "PathLike",
    "SampledFrame",
    "TimedFrame",
    "VideoInfo",
    "VideoWriter",
    "aac_accepts",
    "iter_all_frames",
    "iter_audio",
    "iter_frames_at",
    "probe_video",
    "read_audio_track",
    "sample_times",
    "stereo_downmix_matrix",
    "write_time_base",
]
