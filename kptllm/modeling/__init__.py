"""The network (paper Sec. 3): configuration, the model that splices visual and keypoint-prompt tokens
into the LLM, the prompt encoder (Eq. 1), the prompt feature extractor (Eq. 2, with our local read),
positional encodings, and LoRA merging for inference."""

from .configuration import KptLLMConfig
from .model import KptLLMForKeypoints

__all__ = ["KptLLMConfig", "KptLLMForKeypoints"]
