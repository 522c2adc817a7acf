"""Datasets: COCO-format keypoint files, MP-100 episodes, AP-10K cross-species splits."""

from .coco import Annotation, Category, ImageInfo, KeypointDataset, clean_bbox, skeleton_to_zero_based
from .episodes import AP10K_SETTINGS, Episode, ap10k_cross_species, cape_objects, make_episodes

__all__ = ["Annotation", "Category", "ImageInfo", "KeypointDataset", "clean_bbox", "skeleton_to_zero_based",
           "AP10K_SETTINGS", "Episode", "ap10k_cross_species", "cape_objects", "make_episodes"]
