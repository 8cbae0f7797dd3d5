"""minicct: a NumPy-only Compact Convolutional Transformer and the single-nodal-performance analysis.

Shape legend used in every module:
    N batch, C channels, H height, W width, T tokens, D embedding, h heads,
    d head dim (D = h * d), F feed-forward hidden width, K classes.
"""
__version__ = "0.1.0"
