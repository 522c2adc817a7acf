"""Decoding: the engine that turns requests into results (`engine`), greedy decoding over shared image
prefixes (`generation`, and `static_decode` with CUDA graphs, both on `decode_state` and
`modeling.shared_prefix`), the answer grammar
(`constraints`) and decoded answers as pixel results (`answers`)."""
