"""The seven graders, one file per exercise (gNN_*.py): seeded cases, minicct's answer, the known wrong answers.

Every reference value comes from minicct's own functions (layers/*, analysis/*); the wrong answers
("variants") are built from the reference or from a small parametrised re-implementation whose
mistake-free setting is checked against minicct on every run (so a hint can never be computed from a
reference that drifted away from minicct).
Shape legend: N batch, C channels, H, W, T tokens, D embedding / nodes, h heads, d head dim, K classes.
"""
from .g01_linear import grade_linear
from .g02_layernorm import grade_layernorm
from .g03_attention import grade_softmax_attention
from .g04_conv import grade_conv
from .g05_snp import grade_snp
from .g06_clusters import grade_clusters
from .g07_andc import grade_andc

__all__ = ["grade_linear", "grade_layernorm", "grade_softmax_attention", "grade_conv", "grade_snp", "grade_clusters",
           "grade_andc"]
