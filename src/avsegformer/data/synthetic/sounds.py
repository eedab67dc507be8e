"""Sound synthesisers of the vocabulary classes, the per-second gating and the mix.

Each class sound is a stationary texture recognisable in any 0.96 s VGGish window: its
events repeat at least once per second and its pitch / noise band is its own (see
``SynthClass.band_hz``). Everything is vectorised numpy; event sounds are short
templates added at their onsets, noise bands are shaped in the FFT domain.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
_RAMP_SECONDS = 0.02  # fade at on/off switches of a source: no clicks at second boundaries

Synth = Callable[[int, int, np.random.Generator], np.ndarray]


# ---------------------------------------------------------------------------- helpers

_TABLE_SIZE = 4096  # one period of a wavetable oscillator
_BANK_SAMPLES = 2**18  # 16.4 s at 16 kHz; noise banks are circular, so any offset works


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return x / rms if rms > 0 else x


def _band_gain(freqs: np.ndarray, low: float, high: float) -> np.ndarray:
    """Band-pass magnitude: 1 inside [low, high], 4th-order-like shoulders outside."""
    with np.errstate(divide="ignore"):
        high_pass = 1.0 / (1.0 + (low / np.maximum(freqs, 1e-3)) ** 4)
    return high_pass / (1.0 + (freqs / high) ** 4)


@lru_cache(maxsize=64)
def _noise_bank(low: float, high: float, sr: int) -> np.ndarray:
    """Circular band-limited noise: float32 ``[2**18]``, unit RMS, fixed content.

    Flat in [low, high] Hz with linear 10 % skirts (steep, so the band is where it is
    claimed to be). Drawing noise as a random window of a cached bank is ~50x cheaper
    than filtering fresh noise per clip and statistically the same for a 5-10 s clip.
    """
    rng = np.random.default_rng(zlib.crc32(f"{low}-{high}-{sr}".encode()))
    half = _BANK_SAMPLES // 2 + 1
    spectrum = rng.standard_normal(half) + 1j * rng.standard_normal(half)
    freqs = np.fft.rfftfreq(_BANK_SAMPLES, 1.0 / sr)
    gain = np.clip((freqs - 0.9 * low) / (0.1 * low), 0, 1) * np.clip(
        (1.1 * high - freqs) / (0.1 * high), 0, 1
    )
    bank = _unit_rms(np.fft.irfft(spectrum * gain, _BANK_SAMPLES)).astype(np.float32)
    bank.setflags(write=False)
    return bank


def _take(bank: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a circular bank from a random offset, random sign: float32 ``[n]``."""
    start = int(rng.integers(bank.size))
    index = (start + np.arange(n)) % bank.size
    return bank[index] * np.float32(rng.choice((-1.0, 1.0)))


def _band_noise(n: int, sr: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """Noise band-limited to [low, high] Hz: float32 ``[n]``, ~unit RMS."""
    return _take(_noise_bank(float(low), float(high), sr), n, rng)


@lru_cache(maxsize=64)
def _wavetable(kind: str, f0: float, max_f0: float, low: float, high: float, sr: int) -> np.ndarray:
    """One period of a band-limited waveform: float32 ``[4096]``, unit RMS.

    ``kind``: ``"saw"`` (all harmonics, 1/h) or ``"square"`` (odd harmonics, 1/h). The
    spectrum is shaped as if the tone were played at ``f0`` through the band [low, high]
    Hz; harmonics that would pass Nyquist at ``max_f0`` are left out (no aliasing).
    """
    count = int((0.5 * sr - 100) // max_f0)
    h = np.arange(1, count + 1, dtype=np.float64)
    amps = 1.0 / h
    if kind == "square":
        amps[1::2] = 0.0
    amps *= _band_gain(h * f0, low, high)
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : count + 1] = -1j * amps  # sine phase
    table = _unit_rms(np.fft.irfft(spectrum, _TABLE_SIZE)).astype(np.float32)
    table.setflags(write=False)
    return table


def _cycles(f0: np.ndarray | float, n: int, sr: int) -> np.ndarray:
    """Running phase in cycles, wrapped to [0, 1): float64 ``[n]``."""
    if np.ndim(f0) == 0:
        cycles = np.arange(n) * (float(f0) / sr)
    else:
        cycles = np.cumsum(np.asarray(f0, np.float64)[:n]) / sr
    return cycles - np.floor(cycles)  # much faster than np.mod for floats


def _oscillate(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Wavetable oscillator (nearest sample of a 4096-point period): float32 ``[n]``."""
    return table[(cycles * _TABLE_SIZE).astype(np.int32) % _TABLE_SIZE]


def _partials(
    cycles: np.ndarray, amps: tuple[float, ...], ratios: tuple[float, ...] | None = None
) -> np.ndarray:
    """Sum of sines ``amps[k] * sin(2 pi ratios[k] * cycles)``: float32 ``[n]``."""
    ratios = ratios or tuple(float(h + 1) for h in range(len(amps)))
    angle = (2 * np.pi * cycles).astype(np.float32)
    out = np.zeros(cycles.shape, np.float32)
    for a, r in zip(amps, ratios, strict=True):
        out += np.float32(a) * np.sin(np.float32(r) * angle)
    return out


def _onsets(
    seconds: float, rate: float, rng: np.random.Generator, jitter: float = 0.25
) -> np.ndarray:
    """Event times in [0, seconds): a ``rate``/s grid, each jittered by ``jitter`` periods."""
    period = 1.0 / rate
    grid = np.arange(rng.uniform(0, period), seconds, period)
    return np.clip(grid + rng.uniform(-jitter, jitter, grid.size) * period, 0, None)


def _envelope(n: int, sr: int, attack: float, decay: float | None) -> np.ndarray:
    """Linear attack, exponential decay (time constant ``decay`` s; None = hold), 10 ms
    release at the end so events stop without a click: float32 ``[n]``."""
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    env = np.minimum(t / np.float32(attack), np.float32(1.0))
    if decay is not None:
        env *= np.exp(-t / np.float32(decay))
    release = min(n, int(0.01 * sr))
    env[n - release :] *= np.linspace(1.0, 0.0, release, dtype=np.float32)
    return env


def _tone(
    sr: int,
    seconds: float,
    f0: np.ndarray | float,
    amps: tuple[float, ...],
    attack: float,
    decay: float | None,
) -> np.ndarray:
    """A harmonic tone event with its envelope.

    ``f0`` is a scalar or a per-sample frequency track (Hz).
    Returns float32 ``[round(seconds * sr)]``.
    """
    n = int(round(seconds * sr))
    return _partials(_cycles(f0, n, sr), amps) * _envelope(n, sr, attack, decay)


def _place(
    n: int, sr: int, onsets: np.ndarray, make_event: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Sum event waveforms ``make_event(i)`` starting at ``onsets`` seconds into ``[n]`` samples."""
    out = np.zeros(n, np.float32)
    for i, onset in enumerate(onsets):
        start = int(onset * sr)
        if start >= n:
            break
        event = make_event(i)
        stop = min(n, start + event.size)
        out[start:stop] += event[: stop - start]
    return out


def _notes_track(
    n: int, sr: int, choices: np.ndarray, hold: float, rng: np.random.Generator
) -> np.ndarray:
    """Per-sample f0 (Hz): a new note from ``choices`` every ``hold`` seconds: float64 ``[n]``."""
    per_note = int(hold * sr)
    notes = rng.choice(choices, size=n // per_note + 1)
    return np.repeat(notes, per_note)[:n]


def _seconds_axis(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


# C-major notes used by the pitched instruments (Hz)
_C_MAJOR = 261.63 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)


# ---------------------------------------------------------------------------- classes


def dog(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(350, 410)

    def bark(_: int) -> np.ndarray:
        size = int(0.15 * sr)
        f = np.linspace(1.0, 0.78, size) * base * rng.uniform(0.93, 1.07)
        voiced = _tone(sr, 0.15, f, (1.0, 0.9, 0.7, 0.5, 0.35, 0.2), 0.005, 0.06)
        noise = _band_noise(size, sr, 400, 2000, rng) * _envelope(size, sr, 0.002, 0.04)
        return voiced + 0.3 * noise

    return _place(n, sr, _onsets(n / sr, 2.5, rng), bark)


def cat(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    low, peak = rng.uniform(490, 550), rng.uniform(800, 900)

    def meow(_: int) -> np.ndarray:
        x = np.linspace(0, 1, int(0.65 * sr))
        f = low + (peak - low) * np.sin(np.pi * x) ** 1.5
        return _tone(sr, 0.65, f, (1.0, 0.6, 0.4, 0.25), 0.06, 0.5)

    return _place(n, sr, _onsets(n / sr, 1.1, rng, jitter=0.1), meow)


def bird(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    def chirp(_: int) -> np.ndarray:
        start = rng.uniform(2900, 3200)
        f = np.linspace(start, start * rng.uniform(1.3, 1.45), int(0.05 * sr))
        return _tone(sr, 0.05, f, (1.0,), 0.003, 0.03)

    return _place(n, sr, _onsets(n / sr, 7.0, rng), chirp)


def car(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    f0 = rng.uniform(78, 92) * (1 + 0.25 * np.sin(2 * np.pi * 0.35 * t + rng.uniform(0, 2 * np.pi)))
    return _oscillate(_wavetable("saw", 85.0, 115.0, 1.0, 1000.0, sr), _cycles(f0, n, sr))


def piano(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    def note(_: int) -> np.ndarray:
        return _tone(sr, 0.4, 2 * rng.choice(_C_MAJOR), (1.0, 0.4, 0.2), 0.003, 0.18)

    return _place(n, sr, _onsets(n / sr, 4.0, rng, jitter=0.1), note)


def guitar(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    def pluck(_: int) -> np.ndarray:
        f0 = 0.5625 * rng.choice(_C_MAJOR)  # D3..D4 (147-294 Hz)
        return _tone(sr, 0.5, f0, (1.0, 0.7, 0.5, 0.35, 0.25, 0.15), 0.002, 0.3)

    return _place(n, sr, _onsets(n / sr, 3.0, rng, jitter=0.1), pluck)


def violin(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    notes = np.minimum(_notes_track(n, sr, 3 * _C_MAJOR[:5], 0.5, rng), 1050.0)  # 785-1050 Hz
    f0 = notes * (1 + 0.015 * np.sin(2 * np.pi * 6.5 * t))
    return _oscillate(_wavetable("saw", 900.0, 1070.0, 700.0, 5000.0, sr), _cycles(f0, n, sr))


def helicopter(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    chop = (0.5 + 0.5 * np.cos(2 * np.pi * rng.uniform(12.5, 15.5) * t)) ** 4
    return _band_noise(n, sr, 100, 480, rng) * (0.15 + chop).astype(np.float32)


def emergency_car(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    sweep = np.abs(2 * ((t * rng.uniform(1.8, 2.2) + rng.uniform(0, 1)) % 1.0) - 1.0)
    return _partials(_cycles(950.0 + 750.0 * sweep, n, sr), (1.0, 0.3))


def keyboard(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    size = int(0.008 * sr)
    envelope = _envelope(size, sr, 0.0005, 0.003)
    return _place(
        n, sr, _onsets(n / sr, 10.0, rng, jitter=0.45),
        lambda _: _band_noise(size, sr, 2500, 7000, rng) * envelope,
    )  # fmt: skip


def saw(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    f0 = rng.uniform(135, 155) * (1 + 0.12 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6.3)))
    buzz = _oscillate(_wavetable("square", 145.0, 175.0, 1200.0, 4500.0, sr), _cycles(f0, n, sr))
    return buzz + 0.8 * _band_noise(n, sr, 2500, 5000, rng)


def man(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    f0 = rng.uniform(110, 130) * (1 + 0.06 * np.sin(2 * np.pi * 1.3 * t))
    voice = _oscillate(_formant_table(sr), _cycles(f0, n, sr))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.5, 4.5) * t + rng.uniform(0, 6.3)), 0, 1)
    return voice * syllables.astype(np.float32)


@lru_cache(maxsize=4)
def _formant_table(sr: int) -> np.ndarray:
    """A 120 Hz buzz through vowel formants at 600 and 1200 Hz, low-passed at 1.5 kHz."""
    f0, count = 120.0, int((0.5 * sr - 100) // 140.0)
    h = np.arange(1, count + 1, dtype=np.float64)
    freqs = h * f0
    formants = (
        0.25
        + np.exp(-0.5 * ((freqs - 600) / 120) ** 2)
        + np.exp(-0.5 * ((freqs - 1200) / 120) ** 2)
    )
    amps = formants / h / (1.0 + (freqs / 1500.0) ** 4)
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : count + 1] = -1j * amps
    table = _unit_rms(np.fft.irfft(spectrum, _TABLE_SIZE)).astype(np.float32)
    table.setflags(write=False)
    return table


def woman(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    notes = _notes_track(n, sr, np.array([300.0, 330.0, 350.0, 392.0, 415.0]), 0.5, rng)
    f0 = notes * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    return _partials(_cycles(f0, n, sr), (1.0, 0.5, 0.3, 0.15))


def marimba(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    def bell(_: int) -> np.ndarray:
        f0 = rng.uniform(1800, 2600)
        # Inharmonic second partial (x2.76, like a struck bar): two separate tones.
        partial = _tone(sr, 0.6, 2.76 * f0, (0.5,), 0.002, 0.2)
        return _tone(sr, 0.6, f0, (1.0,), 0.002, 0.3) + partial

    return _place(n, sr, _onsets(n / sr, 3.0, rng, jitter=0.1), bell)


def mower(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = _seconds_axis(n, sr)
    buzz = _oscillate(
        _wavetable("saw", 55.0, 62.0, 1.0, 400.0, sr), _cycles(rng.uniform(50, 60), n, sr)
    )
    wobble = (1 + 0.2 * np.sin(2 * np.pi * 0.8 * t)).astype(np.float32)
    return (_band_noise(n, sr, 700, 1800, rng) + 0.5 * buzz) * wobble


def gun(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    size = int(0.12 * sr)
    envelope = _envelope(size, sr, 0.0005, 0.025)
    return _place(
        n, sr, _onsets(n / sr, 1.5, rng, jitter=0.2),
        lambda _: _band_noise(size, sr, 150, 6500, rng) * envelope,
    )  # fmt: skip


SYNTHS: dict[str, Synth] = {
    "dog": dog,
    "cat": cat,
    "bird": bird,
    "car": car,
    "piano": piano,
    "guitar": guitar,
    "violin": violin,
    "helicopter": helicopter,
    "emergency-car": emergency_car,
    "keyboard": keyboard,
    "saw": saw,
    "man": man,
    "woman": woman,
    "marimba": marimba,
    "mower": mower,
    "gun": gun,
}


# ---------------------------------------------------------------------------- mixing


def class_sound(
    name: str, num_samples: int, rng: np.random.Generator, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """The sound of class ``name``: float32 ``[num_samples]``, unit RMS, un-gated."""
    return _unit_rms(SYNTHS[name](num_samples, sr, rng)).astype(np.float32)


def second_gate(active: np.ndarray, num_samples: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Gain track of a source that sounds in the seconds where ``active`` (bool [S]) is true.

    Returns float32 ``[num_samples]`` in [0, 1]: 1 in active seconds, 0 elsewhere, with a
    20 ms linear ramp centred on every second boundary where the state switches.
    """
    active = np.asarray(active, bool)
    gate = np.repeat(active.astype(np.float32), sr)[:num_samples]
    if gate.size < num_samples:  # clip longer than the schedule: hold the last second
        gate = np.concatenate([gate, np.full(num_samples - gate.size, gate[-1], np.float32)])
    half = max(1, int(_RAMP_SECONDS * sr) // 2)
    for boundary in np.flatnonzero(active[1:] != active[:-1]) + 1:
        centre = int(boundary) * sr
        lo, hi = max(0, centre - half), min(num_samples, centre + half)
        if lo < hi:
            start, stop = float(active[boundary - 1]), float(active[boundary])
            ramp = np.linspace(start, stop, 2 * half + 2, dtype=np.float32)[1:-1]
            gate[lo:hi] = ramp[lo - (centre - half) : hi - (centre - half)]
    return gate


@lru_cache(maxsize=4)
def _pink_bank(sr: int) -> np.ndarray:
    """Circular pink-ish noise (1/sqrt(f) above 30 Hz): float32 ``[2**20]``, unit RMS."""
    size = 2**20
    rng = np.random.default_rng(zlib.crc32(f"pink-{sr}".encode()))
    spectrum = rng.standard_normal(size // 2 + 1) + 1j * rng.standard_normal(size // 2 + 1)
    spectrum *= 1.0 / np.sqrt(np.maximum(np.fft.rfftfreq(size, 1.0 / sr), 30.0))
    bank = _unit_rms(np.fft.irfft(spectrum, size)).astype(np.float32)
    bank.setflags(write=False)
    return bank


def background_noise(
    num_samples: int, rng: np.random.Generator, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """Pink-ish room noise: float32 ``[num_samples]``, ~unit RMS (a random window of a bank)."""
    return _take(_pink_bank(sr), num_samples, rng)


def mix_sources(
    sources: list[np.ndarray],
    gates: list[np.ndarray],
    gains_db: list[float],
    snr_db: float,
    level_dbfs: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mix gated sources, add background noise at ``snr_db`` and set the level.

    Args:
        sources: unit-RMS float32 ``[L]`` waveforms.
        gates: float32 ``[L]`` gain tracks in [0, 1] (see :func:`second_gate`).
        gains_db: per-source gain in dB.
        snr_db: ratio of the mix RMS to the noise RMS, in dB.
        level_dbfs: RMS level of the result in dB relative to full scale.
    Returns:
        float32 ``[L]`` in [-1, 1] (lowered if a peak would clip).
    """
    length = gates[0].size
    mix = np.zeros(length, np.float32)
    for source, gate, gain_db in zip(sources, gates, gains_db, strict=True):
        mix += source * gate * np.float32(10 ** (gain_db / 20))
    mix_rms = float(np.sqrt(np.mean(np.square(mix, dtype=np.float64)))) or 1.0
    mix += background_noise(length, rng) * np.float32(mix_rms * 10 ** (-snr_db / 20))
    mix = _unit_rms(mix) * np.float32(10 ** (level_dbfs / 20))
    peak = float(np.max(np.abs(mix))) if length else 0.0
    if peak > 0.98:
        mix *= np.float32(0.98 / peak)
    return mix.astype(np.float32)
