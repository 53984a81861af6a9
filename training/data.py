"""The procedural "shapes" data set of the demo models: 64×64 images of one coloured shape on a plain or
two-tone neutral background, with a caption that names colour, shape, background and position.

    a red circle on a white background, top left
    a blue star on a gray and black background, center

Everything is drawn from a seeded numpy Generator, so `make_dataset(n, seed=…)` returns the same
images on every machine. Shapes are drawn with opencv at 4× resolution and area-downsampled (smooth
edges, like a photo of a flat shape rather than aliased pixels).

Held-out split: HELD_OUT_COMBOS (colour, shape) pairs never appear in the "train" split; every colour
and every shape does, with other partners. The "heldout" split draws only those pairs, so a model that
draws them right has composed colour and shape, not memorised a caption.

Shape colours are saturated, backgrounds neutral (white / gray / black): the judges in
tests/demo/judge.py find the shape by saturation alone. `style="outlined"` draws the same shapes as a
thick outline — the LoRA's style, which the base model never sees.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

SIZE = 64
SUPERSAMPLE = 4

# name -> RGB. Hues 0°, 53°, 125°, 183°, 228°, 280°: at least 45° apart, so a hue judge separates them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "yellow": (235, 205, 25),
    "green": (35, 170, 50),
    "cyan": (25, 195, 210),
    "blue": (35, 65, 225),
    "purple": (150, 45, 205),
}
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS: dict[str, int] = {"white": 242, "gray": 128, "black": 22}
# caption phrase -> centre (x, y) in pixels
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (20, 20), "top right": (44, 20), "bottom left": (20, 44), "bottom right": (44, 44), "center": (32, 32),
}
# (colour, shape) pairs that never occur in training: one per colour, each shape once or twice.
HELD_OUT_COMBOS = frozenset({
    ("red", "star"), ("yellow", "circle"), ("green", "square"),
    ("cyan", "triangle"), ("blue", "star"), ("purple", "circle"),
})
ALL_COMBOS = tuple((c, s) for c in COLOURS for s in SHAPES)
TRAIN_COMBOS = tuple(cs for cs in ALL_COMBOS if cs not in HELD_OUT_COMBOS)
HELDOUT_COMBOS = tuple(cs for cs in ALL_COMBOS if cs in HELD_OUT_COMBOS)

RADIUS_RANGE = (10.0, 15.0)  # the shape's "radius" in pixels (circle radius; others scaled to similar area)
POSITION_JITTER = 3
OUTLINE_WIDTH = 3.5  # pixels, for style="outlined"


@dataclass(frozen=True)
class Spec:
    colour: str
    shape: str
    background: tuple[str, ...]  # one name (plain) or two (two-tone)
    split_axis: int  # two-tone: 0 = left/right halves, 1 = top/bottom halves
    position: str
    cx: float
    cy: float
    radius: float
    rgb: tuple[int, int, int]  # the drawn colour (the named colour with a little jitter)
    style: str = "filled"

    @property
    def caption(self) -> str:
        bg = " and ".join(self.background)
        return f"a {self.colour} {self.shape} on a {bg} background, {self.position}"

    def to_dict(self) -> dict:
        return asdict(self)


def caption_of(colour: str, shape: str, background: str | tuple[str, ...] = "white",
               position: str | None = "center") -> str:
    """A caption in the data set's form; `position=None` leaves the position phrase out."""
    bg = background if isinstance(background, str) else " and ".join(background)
    return f"a {colour} {shape} on a {bg} background" + (f", {position}" if position else "")


def sample_spec(rng: np.random.Generator, split: str = "train", style: str = "filled",
                combos: tuple[tuple[str, str], ...] | None = None) -> Spec:
    """One random scene of `split` ("train", "heldout" or "all")."""
    if combos is None:
        combos = {"train": TRAIN_COMBOS, "heldout": HELDOUT_COMBOS, "all": ALL_COMBOS}[split]
    colour, shape = combos[rng.integers(len(combos))]
    names = list(BACKGROUNDS)
    if rng.random() < 0.7:
        background: tuple[str, ...] = (names[rng.integers(3)],)
    else:
        first = rng.integers(3)
        background = (names[first], names[(first + 1 + rng.integers(2)) % 3])
    split_axis = int(rng.integers(2))
    position = list(POSITIONS)[rng.integers(len(POSITIONS))]
    px, py = POSITIONS[position]
    cx = px + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    cy = py + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    radius = rng.uniform(*RADIUS_RANGE)
    base = np.array(COLOURS[colour])
    rgb = tuple(int(v) for v in np.clip(base + rng.integers(-12, 13, size=3), 0, 255))
    return Spec(colour, shape, background, split_axis, position, float(cx), float(cy), float(radius), rgb, style)


def shape_polygon(shape: str, cx: float, cy: float, radius: float) -> np.ndarray | None:
    """Vertices (N, 2) in pixels for polygon shapes; None for the circle. Sizes give similar areas."""
    if shape == "circle":
        return None
    if shape == "square":
        h = radius * 0.88
        return np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])
    if shape == "triangle":  # equilateral, pointing up, centred on its centroid
        r = radius * 1.3
        angles = [-90, 30, 150]
        return np.array([[cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)) + r * 0.1]
                         for a in angles])
    if shape == "star":  # five points, pointing up; inner radius 0.45 of the outer
        r_out, r_in = radius * 1.3, radius * 1.3 * 0.45
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = math.radians(-90 + 36 * k)
            pts.append([cx + r * math.cos(a), cy + r * math.sin(a) + r_out * 0.05])
        return np.array(pts)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def shape_mask(shape: str, cx: float, cy: float, radius: float, *, style: str = "filled",
               size: int = SIZE) -> np.ndarray:
    """float32 (size, size) coverage 0..1 of the shape (antialiased)."""
    s = SUPERSAMPLE
    big = np.zeros((size * s, size * s), np.uint8)
    shift = 4  # opencv sub-pixel coordinates: 1/16 pixel
    f = s * (1 << shift)
    poly = shape_polygon(shape, cx, cy, radius)
    thickness = -1 if style == "filled" else max(1, int(round(OUTLINE_WIDTH * s)))
    if style not in ("filled", "outlined"):
        raise ValueError(f"unknown style {style!r}")
    if poly is None:
        r = radius if style == "filled" else radius - OUTLINE_WIDTH / 2
        cv2.circle(big, (int(round(cx * f)), int(round(cy * f))), int(round(r * f)), 255, thickness,
                   lineType=cv2.LINE_AA, shift=shift)
    else:
        pts = np.round(poly * f).astype(np.int32).reshape(-1, 1, 2)
        if style == "filled":
            cv2.fillPoly(big, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
        else:  # the outline lies inside the filled shape's boundary, as a border would
            filled = np.zeros_like(big)
            cv2.fillPoly(filled, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
            k = 2 * int(round(OUTLINE_WIDTH * s)) + 1
            inner = cv2.erode(filled, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            big = np.clip(filled.astype(np.int16) - inner.astype(np.int16), 0, 255).astype(np.uint8)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def background_image(spec: Spec, size: int = SIZE) -> np.ndarray:
    """float32 (size, size, 3) 0..255."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUNDS[spec.background[0]]
    if len(spec.background) == 2:
        half = size // 2
        if spec.split_axis == 0:
            img[:, half:] = BACKGROUNDS[spec.background[1]]
        else:
            img[half:, :] = BACKGROUNDS[spec.background[1]]
    return img


def render(spec: Spec, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size, 3) RGB image of the scene."""
    img = background_image(spec, size)
    cover = shape_mask(spec.shape, spec.cx, spec.cy, spec.radius, style=spec.style, size=size)[..., None]
    img = img * (1 - cover) + np.array(spec.rgb, np.float32) * cover
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


CHUNK = 2000  # scenes per seeded chunk: the data are the same whatever the number of worker processes


@dataclass
class Scenes:
    images: np.ndarray  # uint8 (n, 64, 64, 3)
    captions: list[str]
    specs: list[Spec]
    masks: np.ndarray | None  # float32 (n, 64, 64) shape coverage, when asked for


def _render_chunk(job) -> tuple[np.ndarray, np.ndarray | None, list[Spec]]:
    n, key, split, style, combos, with_masks = job
    rng = np.random.default_rng(key)
    specs = [sample_spec(rng, split, style, combos) for _ in range(n)]
    images = np.stack([render(s) for s in specs]) if specs else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    masks = None
    if with_masks:
        masks = np.stack([shape_mask(s.shape, s.cx, s.cy, s.radius, style=s.style) for s in specs]) if specs \
            else np.zeros((0, SIZE, SIZE), np.float32)
    return images, masks, specs


def make_scenes(n: int, *, seed: int, split: str = "train", style: str = "filled",
                combos: tuple[tuple[str, str], ...] | None = None, masks: bool = False, workers: int = 1) -> Scenes:
    """`n` scenes drawn in seeded chunks of CHUNK; `workers` > 1 renders the chunks in parallel processes
    (a GPU machine's cores), with the same result as one process."""
    base = [seed, {"train": 0, "heldout": 1, "all": 2}[split], 0 if style == "filled" else 1]
    jobs = [(min(CHUNK, n - start), base if i == 0 else base + [i], split, style, combos, masks)
            for i, start in enumerate(range(0, max(n, 1), CHUNK))]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        # forkserver: children that never inherit a CUDA context or a busy opencv thread pool
        with multiprocessing.get_context("forkserver").Pool(min(workers, len(jobs))) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(job) for job in jobs]
    specs = [s for _, _, ss in parts for s in ss]
    return Scenes(np.concatenate([im for im, _, _ in parts]), [s.caption for s in specs], specs,
                  np.concatenate([m for _, m, _ in parts]) if masks else None)


def make_dataset(n: int, *, seed: int, split: str = "train", style: str = "filled",
                 combos: tuple[tuple[str, str], ...] | None = None,
                 workers: int = 1) -> tuple[np.ndarray, list[str], list[Spec]]:
    """`n` scenes: images uint8 (n, 64, 64, 3), captions, specs. Same seed, same data."""
    scenes = make_scenes(n, seed=seed, split=split, style=style, combos=combos, workers=workers)
    return scenes.images, scenes.captions, scenes.specs


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> float32 torch (N, 3, H, W) in [-1, 1] (the VAE's pixel range)."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def other_position(position: str) -> str:
    """The next position phrase after `position` (a deterministic "wrong" position)."""
    names = list(POSITIONS)
    return names[(names.index(position) + 1) % len(names)]


def heldout_prompts(n: int = 60, *, seed: int = 1234) -> list[Spec]:
    """`n` held-out scenes, cycling through the held-out (colour, shape) pairs so each gets its share."""
    rng = np.random.default_rng([seed, 99])
    out = []
    for i in range(n):
        combo = HELDOUT_COMBOS[i % len(HELDOUT_COMBOS)]
        out.append(sample_spec(rng, combos=(combo,)))
    return out


if __name__ == "__main__":  # python -m training.data OUT.png : a contact sheet of the data set
    import sys

    images, captions, _ = make_dataset(64, seed=0)
    outlined, _, _ = make_dataset(16, seed=0, style="outlined")
    sheet = np.concatenate([images, outlined]).reshape(10, 8, SIZE, SIZE, 3).transpose(0, 2, 1, 3, 4)
    sheet = sheet.reshape(10 * SIZE, 8 * SIZE, 3)
    path = sys.argv[1] if len(sys.argv) > 1 else "shapes.png"
    cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print("\n".join(captions[:8]))
    print("wrote", path)
