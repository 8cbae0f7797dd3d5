"""Optional tools around minicct (e.g. the PyTorch twin of the CCT used by the benchmark)."""
