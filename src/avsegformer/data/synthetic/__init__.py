"""A synthetic audio-visual benchmark in which the sound, and only the sound, says what to segment.

Clips show 2-5 moving, scaling objects of a 16-class vocabulary on random textured
backgrounds; every visible object could be making the sound, and the audio (a mix of
the sounding objects' class sounds plus background noise) is the only clue to which one
does. :func:`generate_dataset` writes datasets in the official AVSBench layouts (S4, MS3,
AVSS) plus the generator's own ground truth (``synth_meta/``); :func:`generate_clip`
makes one clip in memory, at any frame rate, size and length, for demos and tests.

Example::

    from avsegformer.data.synthetic import generate_clip, generate_dataset
    clip = generate_clip("switch", seconds=10, fps=25, size=(320, 240), seed=1)
    clip.frames.shape, clip.waveform.shape, clip.sounding_classes
    generate_dataset("s4", "data/synth_s4", videos=200, seed=0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

# Public name -> submodule. Imported on first use, so that the per-task writers
# (:mod:`.formats`, which the task registry imports) do not pull in the generator,
# which itself asks the task registry.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("ClipObject", "SynthClip", "generate_clip", "make_clip"), "clip"),
    **dict.fromkeys(
        (
            "GENERATOR_VERSION",
            "DatasetSummary",
            "generate_dataset",
            "parse_size",
            "parse_splits",
            "video_seed",
        ),
        "dataset",
    ),
    "DEFAULT_AVSS_MIX": "formats",
    **dict.fromkeys(("PRESETS", "SceneConfig"), "scene"),
    **dict.fromkeys(("SAMPLE_RATE", "class_sound"), "sounds"),
    **dict.fromkeys(("CLASS_NAMES", "VOCABULARY", "SynthClass", "get_class"), "vocabulary"),
}

if TYPE_CHECKING:  # static analysers see the eager imports
    from .clip import ClipObject, SynthClip, generate_clip, make_clip  # noqa: F401
    from .dataset import (  # noqa: F401
        GENERATOR_VERSION,
        DatasetSummary,
        generate_dataset,
        parse_size,
        parse_splits,
        video_seed,
    )
    from .formats import DEFAULT_AVSS_MIX  # noqa: F401
    from .scene import PRESETS, SceneConfig  # noqa: F401
    from .sounds import SAMPLE_RATE, class_sound  # noqa: F401
    from .vocabulary import CLASS_NAMES, VOCABULARY, SynthClass, get_class  # noqa: F401


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "CLASS_NAMES",
    "DEFAULT_AVSS_MIX",
    "GENERATOR_VERSION",
    "PRESETS",
    "SAMPLE_RATE",
    "VOCABULARY",
    "ClipObject",
    "DatasetSummary",
    "SceneConfig",
    "SynthClass",
    "SynthClip",
    "class_sound",
    "generate_clip",
    "generate_dataset",
    "get_class",
    "make_clip",
    "parse_size",
    "parse_splits",
    "video_seed",
]
