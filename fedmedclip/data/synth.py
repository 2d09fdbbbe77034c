"""A synthetic, heterogeneous, multi-site set of lesion-like images for the demo, tests and benchmarks.

Why it looks the way it does: an earlier proxy (three clean shapes) was separated perfectly even by a
random-init ViT, which hid every difference between methods. Here each class is a *distribution* over
lesion features (colour, variegation, border irregularity, dots, streaks, vessels, size, asymmetry, edge
sharpness), the class means are pulled toward a common mean by ``difficulty`` and every image draws its own
features around them, so classes overlap. Sites differ like hospitals do: dermatoscope colour cast, contrast,
sensor noise, blur, vignetting, skin tone, hair, and class mix (Dirichlet label skew).

Defaults were tuned with frozen random-init features and a logistic regression trained on one site's 60%
split, tested on that site's 20% (10 seeds x 3 sites). Random-init ViT-B-32: 78% accuracy (64% balanced)
local-only, 80% (71% balanced) with the sites' training splits pooled. The tiny test backbone: 73% (53%)
local-only, 71% (60%) pooled. Predicting each site's majority class scores 64%: with label skew this strong,
pooling mostly helps the rare classes (balanced accuracy), and plain accuracy pays for the prior mismatch.
Site shifts twice as strong as the default erase the pooling gain; difficulty 0.5+ makes it fragile.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fedmedclip.atomic_files import write_atomic

MANIFEST = "synth.json"
HOLDOUT_SITE = "site-holdout"
FORMAT = "fedmedclip-synth/1"
MAX_IMAGE_SIZE = 1024

Look = dict[str, float]  # one image's (or one class's mean) lesion features, keyed by _FEATURES names

# name: (low, high, per-image standard deviation). Colours are 0..255 RGB; the rest are unit-free knobs.
_FEATURES: dict[str, tuple[float, float, float]] = {
    "red": (20, 240, 6),  # colour channels also share a lightness draw (_LIGHTNESS_SD), so that
    "green": (15, 200, 6),  # per-image colour varies like pigment density does, not into green or blue
    "blue": (15, 200, 6),
    "variegation": (0, 1, 0.12),  # how much the lesion mixes in secondary colours
    "centre": (-0.5, 0.6, 0.1),  # >0 darker centre, <0 lighter centre
    "border": (0, 0.4, 0.04),  # radial noise amplitude of the outline
    "dots": (0, 1, 0.12),  # density of dots / globules / cysts
    "dot_red": (0, 255, 8),
    "dot_green": (0, 255, 8),
    "dot_blue": (0, 255, 8),
    "streaks": (0, 1, 0.1),  # radial streaks at the periphery
    "vessels": (0, 1, 0.1),  # fine red branching vessels
    "size": (0.1, 0.42, 0.035),  # lesion radius as a fraction of the image side
    "asym": (0, 0.7, 0.08),  # elongation and lopsidedness
    "edge": (0, 1, 0.12),  # 0 sharp, 1 soft and fading outline
}

_COLOUR_GROUPS = (("red", "green", "blue"), ("dot_red", "dot_green", "dot_blue"))
_LIGHTNESS_SD = 0.12


def _look(colour: tuple[float, float, float], dot: tuple[float, float, float], **knobs: float) -> Look:
    body, dots = _COLOUR_GROUPS
    return {**dict(zip(body, colour, strict=True)), **dict(zip(dots, dot, strict=True)), **knobs}


# Class archetypes loosely after dermoscopy: what each diagnosis tends to look like, not a medical model.
_ARCHETYPES: dict[str, Look] = {
    "nevus": _look((140, 92, 62), (75, 48, 35), variegation=0.12, centre=0.25, border=0.04, dots=0.2,
                   streaks=0.0, vessels=0.0, size=0.2, asym=0.08, edge=0.35),
    "melanoma": _look((82, 52, 46), (40, 32, 40), variegation=0.7, centre=0.05, border=0.24, dots=0.55,
                      streaks=0.55, vessels=0.08, size=0.31, asym=0.45, edge=0.2),
    "carcinoma": _look((205, 135, 132), (105, 110, 135), variegation=0.3, centre=-0.2, border=0.1, dots=0.35,
                       streaks=0.0, vessels=0.8, size=0.25, asym=0.2, edge=0.65),
    "keratosis": _look((168, 124, 84), (235, 225, 190), variegation=0.35, centre=0.0, border=0.13, dots=0.6,
                       streaks=0.12, vessels=0.0, size=0.28, asym=0.2, edge=0.08),
    "dermatofibroma": _look((172, 122, 96), (230, 215, 205), variegation=0.15, centre=-0.45, border=0.06,
                            dots=0.1, streaks=0.0, vessels=0.1, size=0.17, asym=0.1, edge=0.55),
    "vascular": _look((165, 52, 72), (120, 20, 50), variegation=0.25, centre=0.1, border=0.08, dots=0.7,
                      streaks=0.0, vessels=0.3, size=0.2, asym=0.15, edge=0.3),
    "actinic": _look((200, 118, 105), (235, 225, 215), variegation=0.2, centre=0.0, border=0.18, dots=0.4,
                     streaks=0.0, vessels=0.35, size=0.26, asym=0.3, edge=0.85),
    "squamous": _look((212, 145, 118), (240, 230, 200), variegation=0.3, centre=-0.1, border=0.2, dots=0.3,
                      streaks=0.05, vessels=0.55, size=0.3, asym=0.3, edge=0.5),
}  # fmt: skip
# Other spellings (ISIC abbreviations) map to the same archetypes.
_ALIASES = {"nv": "nevus", "naevus": "nevus", "mel": "melanoma", "bcc": "carcinoma", "bkl": "keratosis",
            "df": "dermatofibroma", "vasc": "vascular", "ak": "actinic", "scc": "squamous"}  # fmt: skip
# Secondary lesion colours of dermoscopy: dark brown, blue-grey, red, black, light tan.
_SECONDARY = np.array([(62, 42, 32), (118, 120, 134), (176, 84, 80), (36, 30, 30), (192, 156, 120)], float)
_SKIN = np.array([228.0, 186.0, 158.0])
_HAIR = np.array([38.0, 28.0, 22.0])
_VESSEL = np.array([178.0, 42.0, 52.0])
# Seed streams, so that adding a stream never changes what another one draws.
_CLASS_STREAM, _SITE_STREAM, _LABEL_STREAM, _IMAGE_STREAM = 1, 2, 3, 4


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Invalid values raise ``ValueError`` at construction."""

    sites: int = 3
    classes: tuple[str, ...] = ("nevus", "melanoma", "carcinoma", "keratosis")
    images_per_site: int = 120
    image_size: int = 96
    difficulty: float = 0.4  # 0: class means as the archetypes; 1: every class has the same mean
    label_skew: float = 0.5  # Dirichlet concentration; 0 = each site dominated by one class, inf = balanced
    site_shift: float = 0.5  # 0 = all sites image alike; 1 = strong acquisition differences
    holdout_site: bool = False  # add "site-holdout": a stronger, different shift, meant for test only
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))  # accept lists (from JSON or the CLI)
        _require(self.sites >= 1, f"sites must be >= 1, got {self.sites}")
        _require(len(self.classes) >= 2, f"need at least 2 classes, got {list(self.classes)}")
        for name in self.classes:
            bad = not name or name.startswith(".") or any(c in name for c in "/\\\0") or name != name.strip()
            _require(not bad, f"class name {name!r} cannot be a folder name")
        _require(len(set(self.classes)) == len(self.classes), f"class names repeat: {list(self.classes)}")
        minimum = 2 * len(self.classes)
        _require(
            self.images_per_site >= minimum,
            f"images_per_site must be >= {minimum} (2 per class), got {self.images_per_site}",
        )
        _require(
            16 <= self.image_size <= MAX_IMAGE_SIZE, f"image_size must be 16..{MAX_IMAGE_SIZE}, got {self.image_size}"
        )
        _require(0.0 <= self.difficulty <= 1.0, f"difficulty must be in [0, 1], got {self.difficulty}")
        _require(self.label_skew >= 0.0, f"label_skew must be >= 0 (or inf), got {self.label_skew}")
        _require(
            math.isfinite(self.site_shift) and self.site_shift >= 0.0, f"site_shift must be >= 0, got {self.site_shift}"
        )
        _require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")

    @property
    def site_names(self) -> list[str]:
        names = [f"site-{i}" for i in range(1, self.sites + 1)]
        return [*names, HOLDOUT_SITE] if self.holdout_site else names

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        if math.isinf(self.label_skew):
            data["label_skew"] = "inf"  # strict JSON has no Infinity
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SynthConfig:
        values = dict(data)
        values["label_skew"] = float(values.get("label_skew", 0.5))
        return cls(**values)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass
class SynthSummary:
    """What ``generate`` wrote: per-site per-class counts, in class order."""

    config: SynthConfig
    out_dir: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_images(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.counts.values())

    @property
    def training_sites(self) -> list[str]:
        return [name for name in self.counts if name != HOLDOUT_SITE]

    def site_dir(self, site: str) -> Path:
        return self.out_dir / site

    def to_json(self, complete: bool = True) -> dict[str, Any]:
        return {"format": FORMAT, "complete": complete, "config": self.config.to_json(), "sites": self.counts}


def read_summary(out_dir: str | os.PathLike[str]) -> SynthSummary:
    """Load the summary of a finished ``generate`` run; raises ``ValueError`` for an unfinished or foreign one."""
    base = Path(out_dir)
    path = base / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable synth manifest: {error}") from error
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    if not data.get("complete"):
        raise ValueError(f"{path} describes an unfinished generation; run it again")
    try:
        config = SynthConfig.from_json(data["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} holds an unusable config: {error}") from error
    return SynthSummary(config=config, out_dir=base, counts=data["sites"])


def generate(
    config: SynthConfig, out_dir: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None
) -> SynthSummary:
    """Write ``out_dir/<site>/<class>/<class>_<n>.png`` and ``out_dir/synth.json``; return the summary.

    A directory holding a previous ``synth.json`` is regenerated (its ``site-*`` folders are replaced); any
    other non-empty directory is refused, so a typo cannot scatter images into someone's data.
    """
    base = Path(out_dir)
    _prepare(base)
    looks = _class_looks(config)
    plans = {name: _site_plan(config, index, name) for index, name in enumerate(config.site_names)}
    summary = SynthSummary(config=config, out_dir=base, counts={name: plan[1] for name, plan in plans.items()})
    _write_manifest(base, summary.to_json(complete=False))  # marks the folder as ours even if we crash
    total, done = summary.total_images, 0
    for site_index, (name, (site, counts)) in enumerate(plans.items()):
        for class_index, class_name in enumerate(config.classes):
            folder = base / name / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(counts[class_name]):
                rng = np.random.default_rng([config.seed, _IMAGE_STREAM, site_index, class_index, n])
                features = _draw_features(looks[class_index], rng)
                pixels = _render(features, site, config.image_size, rng)
                Image.fromarray(pixels).save(folder / f"{class_name}_{n:04d}.png", format="PNG")
                done += 1
                if progress is not None:
                    progress(done, total)
    _write_manifest(base, summary.to_json(complete=True))
    return summary


def _prepare(base: Path) -> None:
    if base.exists() and not base.is_dir():
        raise FileExistsError(f"synth output {base} exists and is not a directory")
    if base.is_dir() and any(base.iterdir()):
        if not (base / MANIFEST).is_file():
            raise FileExistsError(
                f"synth output {base} is not empty and has no {MANIFEST}; choose an empty or new directory"
            )
        for entry in base.iterdir():  # only what an earlier generate() wrote
            if entry.is_dir() and not entry.is_symlink() and entry.name.startswith("site-"):
                shutil.rmtree(entry)
    base.mkdir(parents=True, exist_ok=True)


def _write_manifest(base: Path, data: dict[str, Any]) -> None:
    # Insertion order: classes stay in label order.
    write_atomic(base / MANIFEST, (json.dumps(data, indent=2) + "\n").encode())


# ---------------------------------------------------------------------------------------------------------
# Classes: archetype means pulled together by difficulty; each image draws its features around its class.


def _class_looks(config: SynthConfig) -> list[Look]:
    """Mean features per class, after pulling them toward their common mean by ``difficulty``."""
    keys = [_ALIASES.get(name.lower(), name.lower()) for name in config.classes]
    spare = [name for name in _ARCHETYPES if name not in keys]
    means: list[Look] = []
    for index, key in enumerate(keys):
        if key in _ARCHETYPES and key not in keys[:index]:
            means.append(_ARCHETYPES[key])
        elif spare:  # unknown names (or a second alias of one) take unused archetypes: classes stay distinct
            means.append(_ARCHETYPES[spare.pop(0)])
        else:
            rng = np.random.default_rng([config.seed, _CLASS_STREAM, index])
            means.append({name: float(rng.uniform(low, high)) for name, (low, high, _) in _FEATURES.items()})
    common = {name: float(np.mean([mean[name] for mean in means])) for name in _FEATURES}
    keep = 1.0 - config.difficulty
    return [{name: common[name] + keep * (mean[name] - common[name]) for name in _FEATURES} for mean in means]


def _draw_features(mean: Look, rng: np.random.Generator) -> Look:
    drawn = {name: float(rng.normal(mean[name], sd)) for name, (_, _, sd) in _FEATURES.items()}
    for group in _COLOUR_GROUPS:
        lightness = 1.0 + rng.normal(0.0, _LIGHTNESS_SD)
        drawn.update({name: drawn[name] * lightness for name in group})
    return {name: float(np.clip(drawn[name], low, high)) for name, (low, high, _) in _FEATURES.items()}


# ---------------------------------------------------------------------------------------------------------
# Sites: acquisition differences and class mix.


@dataclass(frozen=True)
class _Site:
    gain: np.ndarray  # per-channel colour gain: white balance (warm/cool) and exposure
    offset: np.ndarray  # per-channel offset, 0..255 units
    contrast: float
    noise: float  # sensor noise standard deviation, 0..255 units
    blur: float  # gaussian blur radius in pixels at 96 px
    skin: np.ndarray  # background skin RGB (population and lighting)
    vignette: float  # darkening of the corners by the dermatoscope's round field of view
    hair: float  # mean hairs per image


def _site_plan(config: SynthConfig, index: int, name: str) -> tuple[_Site, dict[str, int]]:
    holdout = name == HOLDOUT_SITE
    rng = np.random.default_rng([config.seed, _SITE_STREAM, index, int(holdout)])
    # Magnitudes are per unit of site_shift; at twice these, random-init features no longer gained from
    # pooling sites. The held-out site is shifted half again as far as a training site: "new hardware".
    shift = config.site_shift * (1.5 if holdout else 1.0)
    site = _Site(
        gain=np.clip(_white_balance(shift * rng.normal(0.0, 0.05), shift * rng.normal(0.0, 0.05)), 0.5, 1.6),
        offset=shift * rng.normal(0.0, 3.0, 3),
        contrast=float(np.exp(shift * rng.normal(0.0, 0.1))),
        noise=2.0 + shift * float(rng.uniform(0.0, 4.0)),
        blur=shift * float(rng.uniform(0.0, 0.6)),
        skin=np.clip(_SKIN * (1.0 + shift * rng.normal(0.0, 0.04)) * (1.0 + shift * rng.normal(0.0, 0.01, 3)), 60, 255),
        vignette=float(np.clip(shift * rng.uniform(-0.2, 0.7), 0.0, 0.9)),
        hair=float(max(0.0, 1.0 + shift * rng.normal(0.0, 0.75))),
    )
    label_rng = np.random.default_rng([config.seed, _LABEL_STREAM, index, int(holdout)])
    # A test-only site is balanced, so that it measures every class; training sites follow label_skew.
    skew = math.inf if holdout else config.label_skew
    proportions = _class_proportions(len(config.classes), skew, label_rng)
    extra = _largest_remainder(proportions, config.images_per_site - 2 * len(config.classes))
    return site, {cls: 2 + int(n) for cls, n in zip(config.classes, extra, strict=True)}


def _white_balance(temperature: float, exposure: float) -> np.ndarray:
    """Per-channel gains of a camera that runs warm (>0) or cool (<0) and bright (>0) or dark (<0)."""
    return (1.0 + exposure) * np.array([1.0 + temperature, 1.0 + 0.2 * temperature, 1.0 - temperature])


def _class_proportions(count: int, concentration: float, rng: np.random.Generator) -> np.ndarray:
    if math.isinf(concentration):
        return np.full(count, 1.0 / count)
    if concentration > 0:
        drawn = rng.dirichlet(np.full(count, concentration))
        if np.all(np.isfinite(drawn)) and drawn.sum() > 0:
            return np.asarray(drawn, dtype=float)
    # Dirichlet(α → 0) puts all its mass on one class: that is what 0 means (and tiny α may underflow).
    one_hot = np.zeros(count)
    one_hot[int(rng.integers(count))] = 1.0
    return one_hot


def _largest_remainder(proportions: np.ndarray, total: int) -> np.ndarray:
    exact = proportions / proportions.sum() * total
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------
# Drawing one image: skin, lesion body, dots, streaks, vessels, hair, then the site's acquisition chain.


def _render(f: Look, site: _Site, size: int, rng: np.random.Generator) -> np.ndarray:
    grid = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    v, u = np.meshgrid(grid, grid, indexing="ij")
    direction = rng.uniform(0.0, 2 * np.pi)  # skin: per-image tone, a lighting gradient and fine texture
    shade = 1.0 + rng.uniform(0.0, 0.1) * (u * np.cos(direction) + v * np.sin(direction))
    shade += 0.03 * _smooth_noise(rng, size, cells=max(4, size // 6))
    # Patient skin: lighter/darker and more or less red (erythema, sun), never green or blue.
    redness = rng.normal(0.0, 0.04)
    tone = rng.normal(1.0, 0.06) * np.array([1.0 + redness, 1.0 - 0.6 * redness, 1.0 - 0.6 * redness])
    image = site.skin * tone * shade[..., None]

    outline = _Outline(f, rng)
    du, dv = u - outline.centre[0], v - outline.centre[1]
    rho = np.hypot(du, dv) / outline.radius(np.arctan2(dv, du))  # < 1 inside the lesion
    softness = 0.03 + 0.16 * f["edge"]
    mask = (1.0 / (1.0 + np.exp(np.clip(-(1.0 - rho) / softness, -50.0, 50.0))))[..., None]

    # Lesion body: base colour, patches of secondary colours (variegation), darker or lighter centre.
    base = np.array([f["red"], f["green"], f["blue"]]) * rng.normal(1.0, 0.05, 3)
    lesion = np.broadcast_to(base, image.shape).copy()
    for colour in _SECONDARY[rng.choice(len(_SECONDARY), size=2, replace=False)]:
        patch = _smooth_noise(rng, size, cells=max(3, size // 16))
        weight = np.clip(f["variegation"] * (patch + 0.3), 0.0, 0.85)[..., None]
        lesion = lesion * (1.0 - weight) + colour * weight
    lesion *= (1.0 - f["centre"] * np.clip(1.0 - rho, 0.0, 1.0))[..., None]
    image = image * (1.0 - mask) + lesion * mask

    overlay, alpha = _structures(f, base, outline, site.hair, size, rng)
    weight = np.asarray(alpha, dtype=float)[..., None] / 255.0
    image = image * (1.0 - weight) + np.asarray(overlay, dtype=float) * weight
    return _acquire(image, site, np.hypot(u, v), size / 96.0, rng)


class _Outline:
    """The lesion's border: a rotated ellipse, lopsided by asymmetry, with harmonic wobble for irregularity.

    The radius is tabulated once per image and interpolated, since every dot and streak asks for it too.
    """

    _ANGLES = np.linspace(0.0, 2 * np.pi, 721)

    def __init__(self, f: Look, rng: np.random.Generator) -> None:
        self.centre = np.clip(rng.normal(0.0, 0.08, 2), -0.2, 0.2)
        rotation, lopside = rng.uniform(0.0, 2 * np.pi, 2)
        k = np.arange(2, 13)
        amplitude = rng.normal(0.0, 1.0, k.size) / k**1.3  # mostly low harmonics: notches and lobes, not stars
        amplitude *= f["border"] / math.sqrt(float(np.sum(amplitude**2)) / 2.0)
        phase = rng.uniform(0.0, 2 * np.pi, k.size)
        theta, elongation = self._ANGLES, 1.0 + 0.9 * f["asym"]
        ellipse = 1.0 / np.sqrt(np.cos(theta - rotation) ** 2 / elongation + np.sin(theta - rotation) ** 2 * elongation)
        wobble = np.cos(np.multiply.outer(theta, k) + phase) @ amplitude
        lopsided = 1.0 + 0.35 * f["asym"] * np.cos(theta - lopside)
        self._radii = np.maximum(2.0 * f["size"] * ellipse * lopsided * (1.0 + wobble), 0.05)

    def radius(self, theta: np.ndarray) -> np.ndarray:
        return np.interp(theta, self._ANGLES, self._radii, period=2 * np.pi)

    def point(self, fraction: float, angle: float, size: int) -> tuple[float, float]:
        """Pixel position at ``fraction`` of the way from the centre to the border along ``angle``."""
        r = fraction * float(self.radius(np.array([angle]))[0])
        return _to_px(self.centre[0] + r * math.cos(angle), self.centre[1] + r * math.sin(angle), size)


def _structures(
    f: Look, base: np.ndarray, outline: _Outline, hair: float, size: int, rng: np.random.Generator
) -> tuple[Image.Image, Image.Image]:
    """Dots, streaks, vessels and hairs, drawn with PIL as an RGB overlay plus its alpha."""
    overlay, alpha = Image.new("RGB", (size, size)), Image.new("L", (size, size), 0)
    pen, ink = ImageDraw.Draw(overlay), ImageDraw.Draw(alpha)
    scale = size / 96.0
    width = max(1, round(scale))
    dot_colour = np.array([f["dot_red"], f["dot_green"], f["dot_blue"]])
    for _ in range(rng.poisson(f["dots"] * 28)):
        x, y = outline.point(math.sqrt(rng.uniform(0.0, 0.8)), rng.uniform(0.0, 2 * np.pi), size)
        r = scale * rng.uniform(0.7, 2.2)
        pen.ellipse((x - r, y - r, x + r, y + r), fill=_rgb(dot_colour * rng.normal(1.0, 0.08, 3)))
        ink.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.uniform(150, 255)))
    for _ in range(rng.poisson(f["streaks"] * 22)):  # radial streaks crossing the border
        angle = rng.uniform(0.0, 2 * np.pi)
        line = [outline.point(rng.uniform(0.6, 0.85), angle, size), outline.point(rng.uniform(1.0, 1.25), angle, size)]
        pen.line(line, fill=_rgb(base * 0.5), width=width)
        ink.line(line, fill=int(rng.uniform(140, 230)), width=width)
    for _ in range(rng.poisson(f["vessels"] * 6)):  # short branching red random walks inside the lesion
        x, y = outline.point(math.sqrt(rng.uniform(0.0, 0.7)), rng.uniform(0.0, 2 * np.pi), size)
        heading, points = rng.uniform(0.0, 2 * np.pi), [(x, y)]
        for _ in range(int(rng.integers(3, 7))):
            heading += rng.normal(0.0, 0.7)
            x, y = x + 4.0 * scale * math.cos(heading), y + 4.0 * scale * math.sin(heading)
            points.append((x, y))
        pen.line(points, fill=_rgb(_VESSEL * rng.normal(1.0, 0.08, 3)), width=width)
        ink.line(points, fill=int(rng.uniform(120, 220)), width=width)
    for _ in range(rng.poisson(hair)):  # hairs: quadratic curves across the whole field
        ends = rng.uniform(-1.2, 1.2, (3, 2))
        steps = np.linspace(0.0, 1.0, 12)[:, None]
        curve = (1 - steps) ** 2 * ends[0] + 2 * (1 - steps) * steps * ends[1] + steps**2 * ends[2]
        points = [_to_px(x, y, size) for x, y in curve]
        pen.line(points, fill=_rgb(_HAIR * rng.normal(1.0, 0.1, 3)), width=width)
        ink.line(points, fill=int(rng.uniform(180, 255)), width=width)
    return overlay, alpha


def _acquire(image: np.ndarray, site: _Site, radius: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """The site's camera: colour cast, contrast, vignette, blur and sensor noise."""
    image = image * site.gain + site.offset
    mean = image.mean(axis=(0, 1), keepdims=True)
    image = (image - mean) * site.contrast + mean
    image *= (1.0 - site.vignette * np.clip((radius - 0.9) / 0.35, 0.0, 1.0))[..., None]
    picture = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    if site.blur * scale > 0.05:
        picture = picture.filter(ImageFilter.GaussianBlur(site.blur * scale))
    noisy = np.asarray(picture, dtype=float) + rng.normal(0.0, site.noise, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field (about unit variance) made by upsampling a coarse grid of white noise."""
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    field_image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)  # mode F (float32)
    return np.asarray(field_image, dtype=float)


def _to_px(x: float, y: float, size: int) -> tuple[float, float]:
    return (x + 1.0) / 2.0 * size, (y + 1.0) / 2.0 * size


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    red, green, blue = (int(c) for c in np.clip(np.rint(colour), 0, 255))
    return red, green, blue
