"""The synthetic vocabulary: 16 sounding-object classes, each with a look and a sound.

Every class is named after an AVSS class (so its semantic id and palette colour are the
official ones) and after the S4 category that maps to it (spec ``avsbench-data.md``
§4.3), so the same generated clip can be written in the S4, MS3 or AVSS layout.

Appearance = silhouette (``shape``) + body colour + texture; silhouettes and colours are
all different so a class stays recognisable at 112 px where the texture blurs away.
Sound = a synthesiser in :mod:`.sounds`; ``band_hz`` is where most of its energy lies
(checked by the tests on the VGGish log-mel, 64 bands between 125 and 7500 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..classes import S4_TO_AVSS, class_index


@dataclass(frozen=True)
class SynthClass:
    """One sounding-object class of the synthetic benchmark.

    Attributes:
        name: AVSS class name (``AVSS_CLASSES``), e.g. ``"dog"``.
        s4_category: the S4 category that maps to ``name``, e.g. ``"dog_barking"``.
        shape: silhouette key of :func:`.sprites.shape_mask`.
        color: body colour, RGB uint8 values.
        texture: texture key of :func:`.sprites.texture_pattern`.
        texture_color: colour of the texture's pattern, RGB.
        sound: one-line description of the synthesised sound.
        band_hz: (low, high) frequency range holding most of the sound's energy.
    """

    name: str
    s4_category: str
    shape: str
    color: tuple[int, int, int]
    texture: str
    texture_color: tuple[int, int, int]
    sound: str
    band_hz: tuple[float, float]

    @property
    def avss_id(self) -> int:
        """Official AVSS class id (palette index) of this class."""
        return class_index(self.name)


VOCABULARY: tuple[SynthClass, ...] = (
    SynthClass("dog", "dog_barking", "circle", (150, 90, 40), "dots", (235, 210, 170),
               "barks: 2.5/s, 150 ms, harmonic f0 380->300 Hz + noise", (300.0, 2200.0)),
    SynthClass("cat", "cat_meowing", "triangle", (150, 150, 165), "hstripes", (70, 70, 80),
               "meows: ~1/s, 650 ms, f0 glide 520->850->560 Hz, 4 harmonics", (450.0, 3500.0)),
    SynthClass("bird", "mynah_bird_singing", "diamond", (245, 215, 30), "solid", (245, 215, 30),
               "chirps: 7/s, 50 ms pure FM sweeps 3.0->4.3 kHz", (2800.0, 4700.0)),
    SynthClass("car", "race_car", "wide_rect", (215, 30, 30), "checker", (250, 250, 250),
               "engine: continuous saw, f0 ~85 Hz revving, low-passed 1 kHz", (70.0, 1100.0)),
    SynthClass("piano", "playing_piano", "square", (240, 240, 240), "vstripes", (20, 20, 20),
               "notes: 4/s, decaying, f0 523-1046 Hz, 3 harmonics", (500.0, 3200.0)),
    SynthClass("guitar", "playing_acoustic_guitar", "tall_ellipse", (240, 140, 20), "rings",
               (120, 60, 10), "plucks: 3/s, decaying, f0 147-294 Hz, 6 harmonics",
               (140.0, 1800.0)),
    SynthClass("violin", "playing_violin", "hourglass", (120, 35, 25), "vgradient", (200, 110, 60),
               "bowed: continuous bright saw, f0 780-1050 Hz, 6.5 Hz vibrato", (750.0, 5000.0)),
    SynthClass("helicopter", "helicopter", "cross", (95, 125, 45), "dstripes", (40, 60, 20),
               "rotor: noise <500 Hz chopped at ~14 Hz", (100.0, 550.0)),
    SynthClass("emergency-car", "ambulance_siren", "hexagon", (30, 80, 225), "hstripes",
               (245, 245, 245), "siren: continuous sine sweeping 950<->1700 Hz at 2 Hz",
               (900.0, 3500.0)),
    SynthClass("keyboard", "typing_on_computer_keyboard", "bar", (55, 55, 68), "grid",
               (200, 200, 215), "clicks: ~10/s, 8 ms noise bursts 2.5-7 kHz", (2500.0, 7500.0)),
    SynthClass("saw", "chainsawing_trees", "star", (205, 40, 165), "dstripes", (250, 200, 235),
               "chainsaw: continuous square ~145 Hz + noise 2.5-5 kHz, revving",
               (1200.0, 5500.0)),
    SynthClass("man", "male_speech", "pentagon", (20, 150, 150), "solid", (20, 150, 150),
               "speech: buzz f0 ~120 Hz, formants 600/1200 Hz, 4 Hz syllables", (100.0, 1500.0)),
    SynthClass("woman", "female_singing", "heart", (250, 150, 190), "dots", (200, 60, 120),
               "singing: sustained notes f0 300-420 Hz, vibrato, formants", (280.0, 2000.0)),
    SynthClass("marimba", "playing_glockenspiel", "ring", (125, 55, 205), "solid",
               (125, 55, 205), "bells: 3/s, decaying partials 1.8-2.6 kHz (x2.76)",
               (1700.0, 7500.0)),
    SynthClass("mower", "lawn_mowing", "trapezoid", (45, 200, 65), "checker", (20, 110, 30),
               "mower: continuous noise 0.7-1.8 kHz + 55 Hz buzz", (600.0, 2000.0)),
    SynthClass("gun", "cap_gun_shooting", "arrow", (40, 200, 230), "vgradient", (10, 90, 120),
               "shots: 1.5/s, 120 ms broadband bangs, fast decay", (150.0, 7500.0)),
)  # fmt: skip

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in VOCABULARY)


def get_class(name: str) -> SynthClass:
    """The :class:`SynthClass` called ``name`` (AVSS name or S4 category)."""
    for c in VOCABULARY:
        if name in (c.name, c.s4_category):
            return c
    raise KeyError(f"unknown synthetic class {name!r}; known: {', '.join(CLASS_NAMES)}")


def _check_vocabulary() -> None:
    # Import-time guard: the S4 <-> AVSS pairs must be the official ones (spec §4.3).
    for c in VOCABULARY:
        if S4_TO_AVSS.get(c.s4_category) != c.name:
            raise AssertionError(f"{c.s4_category} does not map to {c.name} in S4_TO_AVSS")


_check_vocabulary()
