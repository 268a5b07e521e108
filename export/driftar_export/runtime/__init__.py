"""The exported sampler on the host: graph executors, the plain / speculative loops, the Runner."""
