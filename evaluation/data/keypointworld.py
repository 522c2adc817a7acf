"""KeypointWorld: a procedural world of drawn objects with exact keypoints, for training and as a benchmark.

    scene = render_scene(np.random.default_rng(0))     # PIL image + objects (category, bbox, keypoints)
    write_dataset("kw/", n=200, seed=7)                # kw/images/*.jpg + kw/annotations.json (COCO)

Five categories carry real datasets' keypoint names: a person (the 17 COCO keypoints), a quadruped (the
17 AP-10K keypoints), a face (nine AFLW/COFW-style landmarks), a car (the 14 CarFusion keypoints) and
a chair (ten corner/leg keypoints). Objects get a random pose, scale, rotation, aspect, mirroring,
colours and placement (possibly truncated by the image border), on a textured background with clutter,
several objects per image, partial occlusion.

The world's left/right rule: every part on an object's **left** side is drawn in a warm colour (hue
0-40 deg), every part on its **right** side in a cool colour (hue 190-245 deg); the object's own body
and the background use any colour. So left and right can be told apart from one image, as a person
does from a face or a car's shape. A mirrored *image* breaks that rule, which is why training on
KeypointWorld uses no horizontal-flip augmentation (mirrored *objects* are drawn with the rule kept).

Versions (`version=`; files and records say which): **1**, the world of every shipped model and record up to
stage 15 of the embedded model; **2** (issue 28) draws a quadruped's hind legs as a real animal's (a thick thigh, the stifle
forward and the hock back) and its tail thicker at the root, so that front and back legs differ in the
picture itself and not only by which end the head is at: with v1, a quadruped whose head is cut off or
covered has front and back legs that nothing tells apart. Everything else, and every random draw before
the first quadruped, is the same in both. `DEFAULT_VERSION` is what files, training and the benchmarks render
unless told otherwise: 2 since the embedded model's stage 16 (trained on v2) shipped and the records were re-scored
on v2 files; `version=1` still renders the old files byte for byte.

Coordinates: continuous pixels, pixel (i, j) covers [i, i+1) x [j, j+1); boxes are COCO xywh.
Visibility follows COCO: 2 visible, 1 labelled but occluded, 0 not labelled (outside the image, or the
face of a person seen from behind; stored as 0, 0, 0). Occluded means covered by another object or an
occluder, or by the object's own other side: a left keypoint whose pixel shows a part drawn in the
right side's colour (a quadruped's far paw behind its near leg), and the reverse.
"""

from __future__ import annotations

import colorsys
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ----------------------------------------------------------------------------------------- categories
PERSON = ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
          "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
          "right knee", "left ankle", "right ankle")
QUADRUPED = ("left eye", "right eye", "nose", "neck", "root of tail", "left shoulder", "left elbow",
             "left front paw", "right shoulder", "right elbow", "right front paw", "left hip", "left knee",
             "left back paw", "right hip", "right knee", "right back paw")
FACE = ("left eyebrow", "right eyebrow", "left eye", "right eye", "nose tip", "left mouth corner",
        "right mouth corner", "upper lip", "chin")
CAR = ("right front wheel", "left front wheel", "right back wheel", "left back wheel", "right front light",
       "left front light", "right back light", "left back light", "exhaust", "right front roof",
       "left front roof", "right back roof", "left back roof", "center")
CHAIR = ("left front leg end", "right front leg end", "left back leg end", "right back leg end",
         "left front seat corner", "right front seat corner", "left back seat corner", "right back seat corner",
         "left backrest top", "right backrest top")


def _flip_pairs(names) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        if "left" in n.split():
            j = index.get(n.replace("left", "right"))
            if j is not None:
                pairs.append((i, j))
    return tuple(pairs)


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    keypoints: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        return _flip_pairs(self.keypoints)


CATEGORIES = {
    "person": Category(1, "person", PERSON, ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12),
                                             (5, 6), (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
                                             (1, 3), (2, 4), (3, 5), (4, 6))),
    "quadruped": Category(2, "quadruped", QUADRUPED, ((0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6),
                                                      (6, 7), (3, 8), (8, 9), (9, 10), (4, 11), (11, 12),
                                                      (12, 13), (4, 14), (14, 15), (15, 16))),
    "face": Category(3, "face", FACE, ((0, 2), (1, 3), (2, 4), (3, 4), (4, 7), (5, 7), (6, 7), (5, 8), (6, 8))),
    "car": Category(4, "car", CAR, ((0, 2), (1, 3), (0, 1), (2, 3), (9, 11), (10, 12), (9, 10), (11, 12), (4, 0),
                                    (4, 9), (4, 5), (5, 1), (5, 10), (6, 2), (6, 11), (7, 3), (7, 12), (6, 7))),
    "chair": Category(5, "chair", CHAIR, ((0, 4), (1, 5), (2, 6), (3, 7), (4, 5), (6, 7), (4, 6), (5, 7), (6, 8),
                                          (7, 9), (8, 9))),
}
CATEGORY_NAMES = tuple(CATEGORIES)
# Other words for the categories (a detector's phrases, another detector's labels): plurals are handled apart
ALIASES = {
    "people": "person", "human": "person", "man": "person", "woman": "person", "child": "person",
    "animal": "quadruped", "dog": "quadruped", "cat": "quadruped", "horse": "quadruped", "cow": "quadruped",
    "head": "face", "vehicle": "car", "automobile": "car", "seat": "chair",
}


# ----------------------------------------------------------------------------------------- colours
def _hsv(h, s, v) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def warm(rng) -> tuple[int, int, int]:
    """A left-side colour: hue 0-40 deg, saturated."""
    return _hsv(rng.uniform(0.0, 0.11), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))


def cool(rng) -> tuple[int, int, int]:
    """A right-side colour: hue 190-245 deg, saturated."""
    return _hsv(rng.uniform(0.53, 0.68), rng.uniform(0.75, 1.0), rng.uniform(0.6, 1.0))


def neutral(rng) -> tuple[int, int, int]:
    """A body colour: any hue, low saturation, so it never reads as a side colour."""
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.9))


def anycolour(rng) -> tuple[int, int, int]:
    return _hsv(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 1))


# ----------------------------------------------------------------------------------------- shapes
@dataclass
class Shape:
    """A drawing primitive in the object's canonical frame: polygon, thick line or disc."""

    kind: str  # "poly" | "line" | "disc"
    points: list  # canonical (x, y)
    colour: tuple[int, int, int]
    size: float = 0.0  # line width / disc radius, canonical units
    outline: tuple[int, int, int] | None = None
    side: str | None = None  # "left" / "right" for parts drawn in a side colour (`_mark_sides`)


def _mark_sides(shapes: list[Shape], left, right) -> list[Shape]:
    """Tag the shapes drawn in the object's left / right colour with their side (self-occlusion labels)."""
    for shape in shapes:
        shape.side = "left" if shape.colour == left else "right" if shape.colour == right else None
    return shapes


@dataclass
class ObjectSpec:
    """An object in its canonical frame (about unit height, y down) before placement."""

    category: Category
    keypoints: np.ndarray  # [K, 2] canonical
    labelled: np.ndarray  # [K] bool: keypoints that exist in this view
    shapes: list[Shape]


def _limb(start, angle, length):
    return (start[0] + length * math.sin(angle), start[1] + length * math.cos(angle))


def make_person(rng) -> ObjectSpec:
    sw, hw = rng.uniform(0.11, 0.16), rng.uniform(0.07, 0.11)
    neck_y, hip_y = -0.25, rng.uniform(0.05, 0.12)
    head_r = rng.uniform(0.07, 0.09)
    head = (rng.uniform(-0.02, 0.02), neck_y - head_r - 0.04)
    back_view = rng.random() < 0.25
    kp = {}
    kp["left shoulder"], kp["right shoulder"] = (sw, neck_y), (-sw, neck_y)
    kp["left hip"], kp["right hip"] = (hw, hip_y), (-hw, hip_y)
    turn = rng.uniform(-0.35, 0.35) * head_r  # head yaw: features slide sideways
    kp["nose"] = (head[0] + turn, head[1] + 0.25 * head_r)
    kp["left eye"], kp["right eye"] = (head[0] + turn + 0.4 * head_r, head[1] - 0.15 * head_r), (head[0] + turn - 0.4 * head_r, head[1] - 0.15 * head_r)
    kp["left ear"], kp["right ear"] = (head[0] + 0.95 * head_r, head[1]), (head[0] - 0.95 * head_r, head[1])
    for side, sign in (("left", 1), ("right", -1)):
        up, low = rng.uniform(0.15, 0.19), rng.uniform(0.13, 0.17)
        a1 = sign * rng.uniform(-0.3, 2.6)
        a2 = a1 + sign * rng.uniform(-0.4, 1.8)
        kp[f"{side} elbow"] = _limb(kp[f"{side} shoulder"], a1, up)
        kp[f"{side} wrist"] = _limb(kp[f"{side} elbow"], a2, low)
        th, sh = rng.uniform(0.2, 0.25), rng.uniform(0.19, 0.23)
        b1 = sign * rng.uniform(-0.25, 0.8)
        b2 = b1 + rng.uniform(-0.6, 0.6)
        kp[f"{side} knee"] = _limb(kp[f"{side} hip"], b1, th)
        kp[f"{side} ankle"] = _limb(kp[f"{side} knee"], b2, sh)
    body, skin = neutral(rng), _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.95))
    left, right = warm(rng), cool(rng)
    limb_w = rng.uniform(0.035, 0.055)
    shapes = []
    for side, colour in (("right", right), ("left", left)):
        shapes += [Shape("line", [kp[f"{side} hip"], kp[f"{side} knee"], kp[f"{side} ankle"]], colour, limb_w * 1.2)]
    shapes.append(Shape("poly", [kp["left shoulder"], kp["right shoulder"], kp["right hip"], kp["left hip"]], body,
                        outline=(20, 20, 20)))
    shapes.append(Shape("line", [(head[0], head[1] + head_r), (0, neck_y)], skin, 0.04))
    for side, colour in (("right", right), ("left", left)):
        shapes.append(Shape("line", [kp[f"{side} shoulder"], kp[f"{side} elbow"], kp[f"{side} wrist"]], colour, limb_w))
        shapes.append(Shape("disc", [kp[f"{side} wrist"]], colour, limb_w * 0.9))
        shapes.append(Shape("disc", [kp[f"{side} ankle"]], colour, limb_w * 1.0))
        shapes.append(Shape("disc", [kp[f"{side} ear"]], colour, 0.25 * head_r))
    shapes.append(Shape("disc", [head], skin, head_r, outline=(30, 30, 30)))
    if back_view:  # hair covers the face: eyes and nose are not labelled
        shapes.append(Shape("disc", [head], _hsv(rng.uniform(0, 0.12), rng.uniform(0.3, 0.9), rng.uniform(0.1, 0.5)), head_r * 0.92))
    else:
        shapes.append(Shape("disc", [kp["left eye"]], left, 0.2 * head_r))
        shapes.append(Shape("disc", [kp["right eye"]], right, 0.2 * head_r))
        shapes.append(Shape("poly", [(kp["nose"][0], kp["nose"][1] - 0.25 * head_r),
                                     (kp["nose"][0] - 0.15 * head_r, kp["nose"][1] + 0.1 * head_r),
                                     (kp["nose"][0] + 0.15 * head_r, kp["nose"][1] + 0.1 * head_r)], (40, 20, 20)))
    labelled = np.array([not (back_view and n in ("nose", "left eye", "right eye")) for n in PERSON])
    return ObjectSpec(CATEGORIES["person"], np.array([kp[n] for n in PERSON]), labelled, _mark_sides(shapes, left, right))


def make_quadruped(rng, version: int = 1) -> ObjectSpec:
    """Side view facing +x; the left side is the far side when facing +x (drawn behind).

    v2 (see the module docstring): hind legs with a thigh and a backward hock, a tapered tail; v1 draws front
    and back legs alike."""
    length, depth = rng.uniform(0.55, 0.8), rng.uniform(0.18, 0.26)
    leg1, leg2 = rng.uniform(0.14, 0.2), rng.uniform(0.13, 0.19)
    kp = {}
    kp["neck"] = (length / 2, -depth * 0.6)
    kp["root of tail"] = (-length / 2, -depth * 0.4)
    head = (kp["neck"][0] + rng.uniform(0.08, 0.13), kp["neck"][1] - rng.uniform(0.08, 0.15))
    head_r = rng.uniform(0.06, 0.085)
    kp["nose"] = (head[0] + head_r * 1.5, head[1] + head_r * 0.4)
    kp["left eye"] = (head[0] + 0.35 * head_r, head[1] - 0.35 * head_r)
    kp["right eye"] = (head[0] + 0.75 * head_r, head[1] - 0.3 * head_r)
    for end, xs in (("front", length / 2 - 0.06), ("back", -length / 2 + 0.07)):
        upper, knee = ("shoulder", "elbow") if end == "front" else ("hip", "knee")
        for side, dx in (("left", -0.03), ("right", 0.02)):
            top = (xs + dx, depth * 0.1)
            if version >= 2 and end == "back":  # stifle forward (+x), hock back: a hind leg's zig-zag
                a1 = rng.uniform(0.15, 0.6)
                a2 = a1 - rng.uniform(0.6, 1.1)
            elif version >= 2:  # a foreleg stands nearly straight under the shoulder
                a1 = rng.uniform(-0.35, 0.2)
                a2 = a1 + rng.uniform(-0.15, 0.35)
            else:
                a1 = rng.uniform(-0.5, 0.5)
                a2 = a1 + rng.uniform(-0.5, 0.5)
            kp[f"{side} {upper}"] = top
            kp[f"{side} {knee}"] = _limb(top, a1, leg1)
            kp[f"{side} {end} paw"] = _limb(kp[f"{side} {knee}"], a2, leg2)
    body, left, right = neutral(rng), warm(rng), cool(rng)
    legw = rng.uniform(0.03, 0.045)

    def legs(side, colour) -> list[Shape]:
        front = Shape("line", [kp[f"{side} shoulder"], kp[f"{side} elbow"], kp[f"{side} front paw"]], colour, legw)
        back = Shape("line", [kp[f"{side} hip"], kp[f"{side} knee"], kp[f"{side} back paw"]], colour, legw)
        if version < 2:
            return [front, back]
        hip, knee = np.array(kp[f"{side} hip"]), np.array(kp[f"{side} knee"])
        across = np.array([-(knee - hip)[1], (knee - hip)[0]]) / max(np.hypot(*(knee - hip)), 1e-6)
        thigh = Shape("poly", [tuple(hip + 1.6 * legw * across), tuple(hip - 1.6 * legw * across),
                               tuple(knee - 0.5 * legw * across), tuple(knee + 0.5 * legw * across)], colour)
        return [front, back, thigh]

    shapes = legs("left", left)
    tail_end = (kp["root of tail"][0] - rng.uniform(0.1, 0.25), kp["root of tail"][1] + rng.uniform(-0.15, 0.2))
    if version >= 2:  # thick at the root, thin at the tip
        root, end = np.array(kp["root of tail"]), np.array(tail_end)
        across = np.array([-(end - root)[1], (end - root)[0]]) / max(np.hypot(*(end - root)), 1e-6)
        shapes.append(Shape("poly", [tuple(root + 0.035 * across), tuple(root - 0.035 * across), tuple(end)], body,
                            outline=(20, 20, 20)))
    else:
        shapes.append(Shape("line", [kp["root of tail"], tail_end], body, 0.025))
    ring = [(length / 2 * math.cos(t) * 1.08, -depth * 0.25 + depth * 0.55 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 20)]
    shapes.append(Shape("poly", ring, body, outline=(20, 20, 20)))
    shapes.append(Shape("line", [kp["neck"], head], body, 0.07))
    shapes.append(Shape("disc", [head], body, head_r, outline=(20, 20, 20)))
    shapes.append(Shape("disc", [kp["nose"]], (25, 25, 25), 0.3 * head_r))
    shapes.append(Shape("disc", [kp["left eye"]], left, 0.22 * head_r))
    shapes.append(Shape("disc", [kp["right eye"]], right, 0.22 * head_r))
    shapes += legs("right", right)
    return ObjectSpec(CATEGORIES["quadruped"], np.array([kp[n] for n in QUADRUPED]), np.ones(len(QUADRUPED), bool), _mark_sides(shapes, left, right))


def make_face(rng) -> ObjectSpec:
    """Frontal face: the subject's left is at +x."""
    w, h = rng.uniform(0.3, 0.4), rng.uniform(0.42, 0.52)
    yaw = rng.uniform(-0.06, 0.06)
    kp = {}
    ey = -h * rng.uniform(0.1, 0.2)
    ex = w * rng.uniform(0.33, 0.45)
    kp["left eye"], kp["right eye"] = (yaw + ex, ey), (yaw - ex, ey)
    kp["left eyebrow"], kp["right eyebrow"] = (yaw + ex, ey - h * 0.14), (yaw - ex, ey - h * 0.14)
    kp["nose tip"] = (yaw * 1.6, h * rng.uniform(0.05, 0.15))
    my = h * rng.uniform(0.32, 0.42)
    mw = w * rng.uniform(0.25, 0.4)
    kp["left mouth corner"], kp["right mouth corner"] = (yaw + mw, my), (yaw - mw, my)
    kp["upper lip"] = (yaw, my - h * 0.04)
    kp["chin"] = (yaw * 0.8, h * 0.92)
    skin, left, right = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.15, 0.6), rng.uniform(0.35, 0.95)), warm(rng), cool(rng)
    oval = [(w * math.cos(t), h * 0.92 * math.sin(t) * (1.0 if math.sin(t) > 0 else 0.95)) for t in np.linspace(0, 2 * math.pi, 28)]
    shapes = [Shape("disc", [(w * 1.0, 0)], left, 0.07), Shape("disc", [(-w * 1.0, 0)], right, 0.07),
              Shape("poly", oval, skin, outline=(30, 30, 30))]
    for side, colour in (("left", left), ("right", right)):
        e, b = kp[f"{side} eye"], kp[f"{side} eyebrow"]
        shapes.append(Shape("poly", [(e[0] - 0.07, e[1]), (e[0], e[1] - 0.035), (e[0] + 0.07, e[1]), (e[0], e[1] + 0.035)], (245, 245, 245)))
        shapes.append(Shape("disc", [e], colour, 0.025))
        shapes.append(Shape("line", [(b[0] - 0.07, b[1] + 0.01), b, (b[0] + 0.07, b[1] + 0.01)], colour, 0.022))
    n = kp["nose tip"]
    shapes.append(Shape("line", [(n[0], n[1] - 0.12), n], (90, 50, 40), 0.02))
    shapes.append(Shape("line", [kp["right mouth corner"], kp["upper lip"], kp["left mouth corner"]], (150, 30, 40), 0.025))
    shapes.append(Shape("disc", [kp["left mouth corner"]], left, 0.018))
    shapes.append(Shape("disc", [kp["right mouth corner"]], right, 0.018))
    return ObjectSpec(CATEGORIES["face"], np.array([kp[n] for n in FACE]), np.ones(len(FACE), bool), _mark_sides(shapes, left, right))


def _oblique(p3, depth_dx, depth_dy):
    x, y, z = p3
    return (x + depth_dx * z, y + depth_dy * z)


def make_car(rng) -> ObjectSpec:
    """A box car facing +x seen in oblique view; its right side (z = 0) is the near side."""
    L, W, H = rng.uniform(0.9, 1.2), rng.uniform(0.35, 0.5), rng.uniform(0.22, 0.3)
    roof_h = rng.uniform(0.14, 0.2)
    ddx, ddy = rng.uniform(0.25, 0.5), -rng.uniform(0.25, 0.45)
    P = lambda x, y, z: _oblique((x, y, z), ddx, ddy)  # noqa: E731
    wr = rng.uniform(0.08, 0.11)
    kp = {}
    for end, x in (("front", L * 0.8), ("back", L * 0.2)):
        kp[f"right {end} wheel"], kp[f"left {end} wheel"] = P(x, 0, 0), P(x, 0, W)
    for end, x in (("front", L), ("back", 0.0)):
        kp[f"right {end} light"], kp[f"left {end} light"] = P(x, -H * 0.6, 0.08 * W), P(x, -H * 0.6, 0.92 * W)
    kp["exhaust"] = P(0.0, -0.04, 0.25 * W)
    r0, r1 = L * rng.uniform(0.55, 0.7), L * rng.uniform(0.2, 0.3)
    for end, x in (("front", r0), ("back", r1)):
        kp[f"right {end} roof"], kp[f"left {end} roof"] = P(x, -H - roof_h, 0.1 * W), P(x, -H - roof_h, 0.9 * W)
    kp["center"] = P(L / 2, -H / 2, W / 2)
    body, left, right = neutral(rng), warm(rng), cool(rng)
    tyre = (20, 20, 20)
    shapes = [Shape("disc", [kp["left front wheel"]], tyre, wr), Shape("disc", [kp["left back wheel"]], tyre, wr),
              Shape("disc", [kp["left front wheel"]], left, wr * 0.45), Shape("disc", [kp["left back wheel"]], left, wr * 0.45)]
    box = lambda z0, z1, x0, x1, y0, y1: [P(x0, y0, z0), P(x1, y0, z0), P(x1, y1, z0), P(x0, y1, z0)]  # noqa: E731
    shapes.append(Shape("poly", [P(0, -H, 0), P(L, -H, 0), P(L, -H, W), P(0, -H, W)], body, outline=(20, 20, 20)))  # top
    shapes.append(Shape("poly", [P(L, 0, 0), P(L, 0, W), P(L, -H, W), P(L, -H, 0)], body, outline=(20, 20, 20)))  # front
    shapes.append(Shape("poly", [P(r1, -H, 0.1 * W), P(r0, -H, 0.1 * W), P(r0, -H - roof_h, 0.1 * W), P(r1, -H - roof_h, 0.1 * W)],
                        (170, 210, 230), outline=(20, 20, 20)))  # cabin, near window
    shapes.append(Shape("poly", [P(r1, -H - roof_h, 0.1 * W), P(r0, -H - roof_h, 0.1 * W), P(r0, -H - roof_h, 0.9 * W),
                                 P(r1, -H - roof_h, 0.9 * W)], body, outline=(20, 20, 20)))  # roof
    shapes.append(Shape("poly", [P(r0, -H, 0.1 * W), P(r0, -H, 0.9 * W), P(r0, -H - roof_h, 0.9 * W), P(r0, -H - roof_h, 0.1 * W)],
                        (150, 190, 215), outline=(20, 20, 20)))  # windscreen
    shapes.append(Shape("poly", box(0, 0, 0, L, 0, -H), body, outline=(20, 20, 20)))  # near (right) side
    shapes.append(Shape("line", [P(0.05 * L, -H * 0.45, 0), P(0.95 * L, -H * 0.45, 0)], right, 0.03))
    shapes.append(Shape("line", [P(L, -H * 0.45, 0.05 * W), P(L, -H * 0.45, 0.95 * W)], body, 0.01))
    shapes += [Shape("disc", [kp["right front wheel"]], tyre, wr), Shape("disc", [kp["right back wheel"]], tyre, wr),
               Shape("disc", [kp["right front wheel"]], right, wr * 0.45), Shape("disc", [kp["right back wheel"]], right, wr * 0.45)]
    for end in ("front", "back"):
        shapes.append(Shape("disc", [kp[f"right {end} light"]], right, 0.028, outline=(255, 255, 255) if end == "front" else (120, 0, 0)))
        shapes.append(Shape("disc", [kp[f"left {end} light"]], left, 0.028, outline=(255, 255, 255) if end == "front" else (120, 0, 0)))
    shapes.append(Shape("disc", [kp["exhaust"]], (60, 60, 60), 0.018, outline=(160, 160, 160)))
    pts = np.array([kp[n] for n in CAR])
    pts[:, 0] -= L / 2
    for s in shapes:
        s.points = [(x - L / 2, y) for x, y in s.points]
    return ObjectSpec(CATEGORIES["car"], pts, np.ones(len(CAR), bool), _mark_sides(shapes, left, right))


def make_chair(rng) -> ObjectSpec:
    """A chair facing the viewer (its left at +x), seat seen obliquely from above."""
    w, d = rng.uniform(0.35, 0.5), rng.uniform(0.3, 0.42)
    leg, back = rng.uniform(0.3, 0.42), rng.uniform(0.3, 0.45)
    ddx, ddy = rng.uniform(-0.25, 0.25), -rng.uniform(0.3, 0.5)
    P = lambda x, y, z: _oblique((x, y, z), ddx, ddy)  # noqa: E731
    kp = {}
    for fb, z in (("front", 0.0), ("back", d)):
        for side, x in (("left", w / 2), ("right", -w / 2)):
            kp[f"{side} {fb} seat corner"] = P(x, 0, z)
            kp[f"{side} {fb} leg end"] = P(x, leg, z)
    kp["left backrest top"], kp["right backrest top"] = P(w / 2, -back, d), P(-w / 2, -back, d)
    body, left, right = neutral(rng), warm(rng), cool(rng)
    lw = rng.uniform(0.025, 0.04)
    shapes = []
    for side, colour in (("left", left), ("right", right)):
        shapes.append(Shape("line", [kp[f"{side} back seat corner"], kp[f"{side} back leg end"]], colour, lw))
    shapes.append(Shape("poly", [kp["left back seat corner"], kp["right back seat corner"], kp["right backrest top"],
                                 kp["left backrest top"]], body, outline=(20, 20, 20)))
    shapes.append(Shape("line", [kp["left backrest top"], kp["right backrest top"]], body, lw))
    shapes.append(Shape("disc", [kp["left backrest top"]], left, lw * 1.1))
    shapes.append(Shape("disc", [kp["right backrest top"]], right, lw * 1.1))
    shapes.append(Shape("poly", [kp["left front seat corner"], kp["right front seat corner"], kp["right back seat corner"],
                                 kp["left back seat corner"]], body, outline=(20, 20, 20)))
    for side, colour in (("left", left), ("right", right)):
        shapes.append(Shape("line", [kp[f"{side} front seat corner"], kp[f"{side} front leg end"]], colour, lw))
        shapes.append(Shape("disc", [kp[f"{side} front seat corner"]], colour, lw * 0.9))
    pts = np.array([kp[n] for n in CHAIR])
    cy = (pts[:, 1].min() + pts[:, 1].max()) / 2
    pts[:, 1] -= cy
    for s in shapes:
        s.points = [(x, y - cy) for x, y in s.points]
    return ObjectSpec(CATEGORIES["chair"], pts, np.ones(len(CHAIR), bool), _mark_sides(shapes, left, right))


MAKERS = {"person": make_person, "quadruped": make_quadruped, "face": make_face, "car": make_car, "chair": make_chair}
VERSIONS = (1, 2)
DEFAULT_VERSION = 2  # what files, training and the benchmarks render unless told otherwise (module docstring)


def make_object(name: str, rng, version: int = DEFAULT_VERSION) -> ObjectSpec:
    """An object of category `name` as world `version` draws it."""
    if version not in VERSIONS:
        raise ValueError(f"KeypointWorld has versions {', '.join(map(str, VERSIONS))}, not {version!r}")
    return MAKERS[name](rng, version) if version != 1 and name == "quadruped" else MAKERS[name](rng)


# ----------------------------------------------------------------------------------------- scenes
@dataclass
class SceneObject:
    """A placed object. `keypoints [K, 3]` = (x, y, v) pixels, COCO visibility; `bbox` xywh (visible part)."""

    category: Category
    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    area: float


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject] = field(default_factory=list)


def _background(rng, width, height) -> Image.Image:
    a, b = np.array(anycolour(rng), np.float32), np.array(anycolour(rng), np.float32)
    t = np.linspace(0, 1, width if rng.random() < 0.5 else height, dtype=np.float32)
    ramp = t[None, :, None] if len(t) == width else t[:, None, None]
    base = a * (1 - ramp) + b * ramp
    base = np.broadcast_to(base, (height, width, 3)).copy()
    small = rng.normal(0, rng.uniform(5, 30), (max(1, height // 8), max(1, width // 8), 3)).astype(np.float32)
    texture = np.asarray(Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR),
                         np.float32) - 128
    noise = rng.normal(0, rng.uniform(0, 10), (height, width, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(base + texture + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 14)):  # clutter
        x, y = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        r = rng.uniform(0.02, 0.18) * min(width, height)
        kind = rng.integers(3)
        colour = anycolour(rng)
        if kind == 0:
            draw.ellipse([x - r, y - r * rng.uniform(0.3, 1), x + r, y + r * rng.uniform(0.3, 1)], fill=colour)
        elif kind == 1:
            draw.rectangle([x - r, y - r, x + r * rng.uniform(0.2, 2), y + r * rng.uniform(0.2, 2)], fill=colour)
        else:
            draw.line([x, y, x + rng.uniform(-2, 2) * r, y + rng.uniform(-2, 2) * r], fill=colour, width=int(rng.integers(1, 5)))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return image


def _place(spec: ObjectSpec, rng, width, height, size: float) -> tuple[np.ndarray, callable]:
    """A random similarity transform (plus aspect stretch and mirror) from canonical units to pixels."""
    angle = rng.normal(0, 0.25) if spec.category.name != "car" else rng.normal(0, 0.08)
    aspect = math.exp(rng.normal(0, 0.12))
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    extent = spec.keypoints.max(0) - spec.keypoints.min(0)
    scale = size / max(extent.max(), 1e-3)
    centre = spec.keypoints.mean(0)
    cx = rng.uniform(0.05, 0.95) * width
    cy = rng.uniform(0.05, 0.95) * height
    c, s = math.cos(angle), math.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) @ np.diag([mirror * scale * aspect, scale / aspect])

    def transform(points) -> np.ndarray:
        return (np.asarray(points, np.float64) - centre) @ matrix.T + np.array([cx, cy])

    return transform, scale


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, transform, scale: float, colour=None) -> None:
    pts = [tuple(p) for p in transform(shape.points)]
    fill = shape.colour if colour is None else colour
    outline = None if colour is not None else shape.outline
    if shape.kind == "poly":
        draw.polygon(pts, fill=fill, outline=outline)
    elif shape.kind == "line":
        width = max(1, int(round(shape.size * scale)))
        draw.line(pts, fill=fill, width=width, joint="curve")
        r = width / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    else:
        r = max(0.8, shape.size * scale)
        x, y = pts[0]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=outline)


def render_scene(rng: np.random.Generator, width: int | None = None, height: int | None = None,
                 categories=None, num_objects: int | None = None, min_size: float = 0.3, max_size: float = 0.85,
                 required: str | None = None, version: int = DEFAULT_VERSION) -> Scene:
    """One image with 1-3 objects. Object size (its keypoints' extent) is `min_size..max_size` x min(w, h).

    `required`: one object (at a random place in the drawing order) is of this category, the others are
    drawn from `categories` as usual; training asks for it instead of re-rendering until one appears.
    Without it the random stream is the one the benchmark files were made with. `version`: the world's
    version (module docstring)."""
    if width is None:
        width = int(rng.integers(160, 321))
    if height is None:
        height = int(np.clip(width * math.exp(rng.normal(0, 0.3)), 120, 360))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    ids = Image.new("L", (width, height), 0)
    ids_draw = ImageDraw.Draw(ids)
    names = list(categories or CATEGORY_NAMES)
    count = num_objects if num_objects is not None else int(rng.choice([1, 1, 2, 2, 3]))
    placed = []
    forced = int(rng.integers(count)) if required is not None else -1
    for k in range(count):
        spec = make_object(required if k == forced else names[int(rng.integers(len(names)))], rng, version)
        size = rng.uniform(min_size, max_size) * min(width, height) / (1 + 0.25 * (count - 1))
        transform, scale = _place(spec, rng, width, height, size)
        parts = Image.new("L", (width, height), 0)  # which of its shapes (index + 1) is on top at each pixel
        parts_draw = ImageDraw.Draw(parts)
        for index, shape in enumerate(spec.shapes):
            _draw(draw, shape, transform, scale)
            _draw(ids_draw, shape, transform, scale, colour=k + 1)
            _draw(parts_draw, shape, transform, scale, colour=index + 1)
        placed.append((spec, transform(spec.keypoints), np.asarray(parts)))
    if rng.random() < 0.35:  # an occluder over part of the scene
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.1, 0.3) * width, rng.uniform(0.1, 0.3) * height
        colour = anycolour(rng)
        box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        kind = "rectangle" if rng.random() < 0.5 else "ellipse"
        getattr(draw, kind)(box, fill=colour, outline=(0, 0, 0))
        getattr(ids_draw, kind)(box, fill=255)  # occluders: id 255
    id_map = np.asarray(ids)
    scene = Scene(image)
    for k, (spec, points, parts) in enumerate(placed):
        kpts = np.zeros((len(points), 3))
        for j, (x, y) in enumerate(points):
            if not spec.labelled[j] or not (0 <= x < width and 0 <= y < height):
                continue
            owner = id_map[int(y), int(x)]
            top = parts[int(y), int(x)]
            side = spec.category.keypoints[j].split()[0]
            behind_own_side = top > 0 and spec.shapes[top - 1].side not in (None, side) and side in ("left", "right")
            kpts[j] = (x, y, 2 if owner in (0, k + 1) and not behind_own_side else 1)
        own = parts > 0
        ys, xs = np.nonzero(own)
        if len(xs) == 0 or (kpts[:, 2] > 0).sum() < 3:
            continue
        bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min()))
        scene.objects.append(SceneObject(spec.category, kpts, bbox, float(own.sum())))
    return scene


# ----------------------------------------------------------------------------------------- COCO files
def coco_categories() -> list[dict]:
    return [{"id": c.id, "name": c.name, "supercategory": "keypointworld", "keypoints": list(c.keypoints),
             "skeleton": [[a + 1, b + 1] for a, b in c.skeleton]} for c in CATEGORIES.values()]


def off_centre(scene: Scene, rng, fill=None) -> Scene:
    """The same scene pasted at a random offset into a larger, non-square canvas; boxes and keypoints move
    with it. Scores on such a copy should match the original's: the crop and its inverse map change, and
    what lies beyond the old border.

    `fill`: None = a fresh KeypointWorld background (no objects); "random" = one random colour; an (r, g, b)
    colour = that colour (the processor's fill colour makes the model see pixel-identical crops).
    """
    image = scene.image
    width, height = int(image.width * rng.uniform(1.4, 2.2)), int(image.height * rng.uniform(1.1, 1.6))
    dx, dy = int(rng.integers(0, width - image.width + 1)), int(rng.integers(0, height - image.height + 1))
    if fill is None:
        canvas = _background(rng, width, height)
    else:
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) if fill == "random" else tuple(fill)
        canvas = Image.new("RGB", (width, height), colour)
    canvas.paste(image, (dx, dy))
    moved = Scene(canvas)
    for obj in scene.objects:
        kpts = obj.keypoints.copy()
        kpts[kpts[:, 2] > 0, :2] += (dx, dy)
        x, y, w, h = obj.bbox
        moved.objects.append(SceneObject(obj.category, kpts, (x + dx, y + dy, w, h), obj.area))
    return moved


FILE_QUALITY = 95  # the JPEG quality of every set's files (`write_dataset`)


def as_file(image: Image.Image, quality: int = FILE_QUALITY) -> Image.Image:
    """`image` as a set's file holds it: saved as JPEG at `quality` (as `write_dataset` saves) and read back, in
    memory. Validation in memory sees what the records read from the files: JPEG's 4:2:0 chroma halves the
    colour resolution, and the world tells left (warm) from right (cool) by colour."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def write_dataset(out, n: int, seed: int, quality: int = FILE_QUALITY, offcentre: bool = False,
                  version: int = DEFAULT_VERSION) -> Path:
    """Render `n` images with seed `seed` to `out/images/` and write `out/annotations.json` (COCO keypoints).

    Deterministic: the same (n, seed, version) gives the same files. With `offcentre`, the same scenes pasted
    off-centre into larger canvases (`off_centre`). Returns the annotation file's path.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        scene = render_scene(np.random.default_rng([seed, i]), version=version)
        if offcentre:
            scene = off_centre(scene, np.random.default_rng([seed, i, 1]))
        name = f"kw_{seed}_{i:06d}.jpg"
        scene.image.save(out / "images" / name, quality=quality)
        images.append({"id": i + 1, "file_name": name, "width": scene.image.width, "height": scene.image.height})
        for obj in scene.objects:
            flat = [round(float(v), 2) if j % 3 < 2 else int(v) for j, v in enumerate(obj.keypoints.reshape(-1))]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": obj.category.id,
                                "bbox": [round(v, 2) for v in obj.bbox], "area": obj.area, "iscrowd": 0,
                                "num_keypoints": int((obj.keypoints[:, 2] > 0).sum()), "keypoints": flat})
    data = {"info": {"description": describe(n, seed, offcentre, version)}, "images": images,
            "annotations": annotations, "categories": coco_categories()}
    path = out / "annotations.json"
    path.write_text(json.dumps(data))
    return path


OFFCENTRE_NOTE = ", off-centre in larger canvases"


def describe(n: int, seed: int, offcentre: bool = False, version: int = DEFAULT_VERSION) -> str:
    """The annotation file's `info.description` (records keep it as `annotations_description`) of world `version`
    (default: the default world, as `write_dataset`); version 1 is unnamed, as in every file made before versions
    existed."""
    world = "KeypointWorld" if version == 1 else f"KeypointWorld v{version}"
    return f"{world}, {n} images, seed {seed}" + (OFFCENTRE_NOTE if offcentre else "")


def parse_description(text) -> tuple[int, int, bool] | None:
    """(n, seed, offcentre) of a `describe` string; None for anything else: what `write_dataset` needs to
    make the same files again."""
    match = re.fullmatch(r"KeypointWorld(?: v\d+)?, (\d+) images, seed (\d+)(" + re.escape(OFFCENTRE_NOTE) + ")?",
                         str(text or ""))
    return (int(match[1]), int(match[2]), bool(match[3])) if match else None


def description_version(text) -> int | None:
    """The world version a `describe` string names (1 when unnamed); None for anything else."""
    if parse_description(text) is None:
        return None
    match = re.match(r"KeypointWorld v(\d+),", str(text))
    return int(match[1]) if match else 1
