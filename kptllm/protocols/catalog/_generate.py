"""Maintainer tool: regenerate `datasets.json` from a dataset-meta JSON (keypoint names, skeletons, flip
pairs and sigmas collected from mmpose's `configs/_base_/datasets` and the MP-100 annotation files).

    python -m kptllm.protocols.catalog._generate path/to/dataset_meta.json

Only facts are copied (keypoint names as the datasets spell them, 0-based skeletons, flip pairs, OKS
sigmas, MP-100 category table); readable names and descriptions are ours (`descriptions.py`).
"""

import json
import sys
from pathlib import Path

# CarFusion's released COCO files name keypoints "0".."13"; this order is the dataset paper's list
# (wheels, lights, exhaust, roof corners, centre), consistent with the released skeleton.
CARFUSION = {
    "dataset_name": "CarFusion",
    "keypoint_names": ["right_front_wheel", "left_front_wheel", "right_back_wheel", "left_back_wheel",
                       "right_front_light", "left_front_light", "right_back_light", "left_back_light", "exhaust",
                       "right_front_roof", "left_front_roof", "right_back_roof", "left_back_roof", "center"],
    "skeleton": [[0, 2], [1, 3], [0, 1], [2, 3], [9, 11], [10, 12], [9, 10], [11, 12], [4, 0], [4, 9], [4, 5],
                 [5, 1], [5, 10], [6, 2], [6, 11], [7, 3], [7, 12], [6, 7]],
    "flip_pairs": [[0, 1], [2, 3], [4, 5], [6, 7], [9, 10], [11, 12]],
    "sigmas": None,
}
KEEP = {"coco": "COCO", "humanart": "Human-Art", "humanart21": "Human-Art (21 keypoints)", "ap10k": "AP-10K",
        "animalpose": "AnimalPose", "macaque": "MacaquePose"}


def main(meta_path: str) -> None:
    meta = json.loads(Path(meta_path).read_text())
    datasets = {}
    for key, title in KEEP.items():
        d = meta["requested"][key]
        datasets[key] = {"title": title, "keypoints": d["keypoint_names"], "skeleton": d["skeleton"],
                         "flip_pairs": d["flip_pairs"], "sigmas": d["sigmas"]}
    ak = meta["other_mmpose_2d"]["ak"]
    datasets["animal_kingdom"] = {"title": "Animal Kingdom", "keypoints": ak["keypoint_names"], "skeleton": ak["skeleton"],
                                  "flip_pairs": ak["flip_pairs"], "sigmas": ak.get("sigmas")}
    datasets["carfusion"] = {"title": "CarFusion", "keypoints": CARFUSION["keypoint_names"],
                             "skeleton": CARFUSION["skeleton"], "flip_pairs": CARFUSION["flip_pairs"], "sigmas": None}
    mp100 = [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"], "keypoints": c["keypoint_names"],
              "skeleton": c["skeleton"], "splits": c["split_membership"]} for c in meta["mp100"]["categories"]]
    out = {"source": {"facts": meta["_origin"], "mp100": meta["mp100"]["source"]}, "datasets": datasets, "mp100": mp100}
    target = Path(__file__).with_name("datasets.json")
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}: {len(datasets)} datasets, {len(mp100)} MP-100 categories")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m kptllm.protocols.catalog._generate path/to/dataset_meta.json")
    main(sys.argv[1])
