"""Readable keypoint names and one-sentence descriptions (our own wording) for text prompts.

Dataset files spell keypoints many ways (`L_F_Paw`, `left_front_paw`, `Eye_Left`, `forelegL2`, `antbaseR`);
`readable_name` turns each into plain words ("left front paw", "left eye", "left foreleg 2", "right
antenna base") and `describe_keypoint` writes a sentence for it. Left and right are always the
subject's own.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = {"l": "left", "r": "right", "f": "front", "b": "back", "ant": "antenna", "antbase": "antenna base",
                  "anttip": "antenna tip", "earbase": "ear base", "tailbase": "tail base", "forefinger": "index finger"}
_SIDES = ("left", "right")

# part -> description; {owner} is "the person's " (or "the "), {side} the side and position words ("left front ").
_PARTS = {
    "eye": "the centre of {owner}{side}eye",
    "ear": "{owner}{side}ear, at its middle",
    "ear base": "the base of {owner}{side}ear, where it joins the head",
    "nose": "the tip of the nose",
    "neck": "the base of the neck, between the shoulders",
    "throat": "the front of the throat, below the jaw",
    "withers": "the highest point of the back between the shoulder blades",
    "shoulder": "{owner}{side}shoulder joint",
    "elbow": "{owner}{side}elbow joint",
    "front elbow": "the elbow of {owner}{side}front leg",
    "back elbow": "the elbow-like joint of {owner}{side}hind leg (the stifle region)",
    "wrist": "{owner}{side}wrist joint",
    "hip": "{owner}{side}hip joint",
    "knee": "{owner}{side}knee joint",
    "front knee": "the knee-like joint (carpus) of {owner}{side}front leg",
    "back knee": "the hock of {owner}{side}hind leg",
    "ankle": "{owner}{side}ankle joint",
    "front paw": "{owner}{side}front paw, where the foot meets the ground",
    "back paw": "{owner}{side}hind paw, where the foot meets the ground",
    "paw": "{owner}{side}paw",
    "root of tail": "the base of the tail, where it leaves the body",
    "tail base": "the base of the tail, where it leaves the body",
    "tail": "the tail",
    "finger": "the tip of {owner}{side}hand's fingers",
    "toe": "the tip of {owner}{side}foot's toes",
    "head mid top": "the top of the head, midway between the ears",
    "mouth front top": "the front of the upper jaw",
    "mouth front bottom": "the front of the lower jaw",
    "mouth back": "the {side}corner of {owner}mouth",
    "torso mid back": "the middle of the back",
    "tail top back": "the base of the tail on the back",
    "tail mid back": "the middle of the tail",
    "tail end back": "the tip of the tail",
    "wheel": "the centre of {owner}{side}wheel",
    "light": "{owner}{side}light",
    "roof": "the {side}corner of {owner}roof",
    "exhaust": "the exhaust pipe",
    "center": "the centre of the vehicle body",
    "antenna base": "the base of {owner}{side}antenna",
    "antenna tip": "the tip of {owner}{side}antenna",
    "wing": "the tip of {owner}{side}wing",
    "leg": "{owner}{side}leg",
    "beak": "the tip of the beak",
    "crown": "the top of the head",
    "nape": "the back of the neck",
    "forehead": "the forehead",
    "back": "the middle of the back",
    "belly": "the middle of the belly",
    "breast": "the middle of the breast",
    "head": "the centre of the head",
    "thorax": "the middle of the thorax",
    "abdomen": "the abdomen",
}
_CHAINS = {"foreleg": "front leg", "midleg": "middle leg", "hindleg": "hind leg", "thumb": "thumb",
           "index finger": "index finger", "middle finger": "middle finger", "ring finger": "ring finger",
           "pinky finger": "little finger", "abdomen": "abdomen"}


def _words(source: str) -> list[str]:
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", source)  # camelCase / eyeL
    text = re.sub(r"(?<=[A-Za-z])(?=\d)", " ", text)  # foreleg L1 -> foreleg L 1
    return re.sub(r"[_\-/]+", " ", text).lower().split()


def readable_name(source: str) -> str:
    """Plain words for a dataset's keypoint name; index names ("7") stay as they are."""
    words = _words(str(source))
    # join known compound abbreviations (ant base -> antbase) before expanding
    joined = " ".join(words)
    for compound in ("ant base", "ant tip", "ear base", "tail base"):
        joined = joined.replace(compound, compound.replace(" ", ""))
    words = [_ABBREVIATIONS.get(w, w) for w in joined.split()]
    words = " ".join(words).split()
    sides = [w for w in words if w in _SIDES]
    rest = [w for w in words if w not in _SIDES]
    return " ".join(sides[:1] + rest) if sides else " ".join(rest)


def describe_keypoint(source: str, subject: str | None = None) -> str:
    """One sentence saying where the keypoint is, e.g. "The centre of the person's left eye." (subject="person")."""
    name = readable_name(source)
    if name.isdigit():
        owner = f"the {subject}" if subject else "the object"
        return f"Keypoint number {name} of {owner}, as defined by its dataset."
    side = next((s for s in _SIDES if name.startswith(s + " ")), "")
    part = name[len(side):].strip() if side else name
    index = None
    if part and part.split()[-1].isdigit():
        *head, number = part.split()
        part, index = " ".join(head), int(number)
    owner = f"the {subject}'s " if subject else "the "
    if index is not None and part in _CHAINS:
        text = f"point {index} along {owner}{side + ' ' if side else ''}{_CHAINS[part]}, counting from the body outwards"
    else:
        for key in sorted(_PARTS, key=len, reverse=True):
            if part == key or part.endswith(" " + key):
                qualifier = " ".join(w for w in (side, part[: -len(key)].strip()) if w)
                text = _PARTS[key].format(owner=owner, side=qualifier + " " if qualifier else "")
                break
        else:
            text = f"{owner}{side + ' ' if side else ''}{part}"
    return text[0].upper() + text[1:] + "."
