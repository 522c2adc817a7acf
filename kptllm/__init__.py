"""kptllm: generic keypoint comprehension with a multimodal LLM (KptLLM++).

Public API: the model (`KptLLMConfig`, `KptLLMForKeypoints`), its `KptLLMProcessor`, the
`KeypointPredictor` for the three tasks, and builders for pretrained parts and tiny test models.
"""

from .modeling.configuration import KptLLMConfig
from .modeling.model import KptLLMForKeypoints
from .predictor import MAX_KEYPOINTS_PER_CALL, MAX_SHOTS, KeypointPredictor, KeypointResult
from .processor import KptLLMProcessor

__version__ = "0.1.0"

__all__ = ["KptLLMConfig", "KptLLMForKeypoints", "KptLLMProcessor", "KeypointPredictor", "KeypointResult",
           "MAX_KEYPOINTS_PER_CALL", "MAX_SHOTS", "__version__"]
