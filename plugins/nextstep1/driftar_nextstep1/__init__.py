"""driftar-nextstep1: NextStep-1 (StepFun 2025, arXiv 2508.10711) as a driftar plugin.

Modules: ``config`` (NextStep1Config, FlowHeadConfig), ``text`` (the tiny word tokenizer and the
prompt prefix), ``layers`` (RMSNorm, RoPE, GQA attention with a KV cache, SwiGLU), ``nextstep``
(the causal backbone), ``flow_head`` (the flow-matching token head), ``presets`` (sizes), ``build``
(bundle and draft factories), ``plugin`` (hook implementations). Importing the package imports
nothing heavy.
"""
