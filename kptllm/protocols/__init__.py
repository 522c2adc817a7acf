"""The text protocols: KptLLM++'s conversation, answer format and strict parser (`protocol`), the protocols
of imported checkpoints such as LocLLM (`checkpoints`), and the keypoint catalog of every dataset (`catalog`)."""
