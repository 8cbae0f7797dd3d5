"""Where activations are read: one `Site` type for the whole package.

A site is the tokenizer output or one part of one encoder. Encoders are counted from 0 in code, as the
parameter keys (`classifier.blocks.{e}`) and the capture names (`enc{e}.out`) count them; the one label
formatter, `Site.label`, shows them counted from 1 as the paper and the lessons do ("encoder 1" is the first).

    Site.tokens()           capture name "tokens"          [N, T, D]  tokenizer output, before the positional emb.
    Site(e, "mha_heads")    "enc{e}.mha_heads"             [N, T, D]  per-head P v, before the output projection
    Site(e, "mha_out")      "enc{e}.mha_out"               [N, T, D]  residual stream after the attention residual
    Site(e, "ff_hidden")    "enc{e}.ff_hidden"             [N, T, F]  feed-forward hidden units after GELU
    Site(e, "out")          "enc{e}.out"                   [N, T, D]  encoder block output
    "pooled" (model.capture_sites) is a capture name but not an SNP site.
Shape legend: N images, T tokens, D embedding, F feed-forward width.
"""
from __future__ import annotations

from dataclasses import dataclass

#: The per-encoder sites, in forward order.
SITES = ("mha_heads", "mha_out", "ff_hidden", "out")


@dataclass(frozen=True)
class Site:
    """encoder: index from 0 (None for the tokenizer); part: one of SITES, or "tokens" for the tokenizer."""

    encoder: int | None
    part: str = "out"
    external: bool = False     # a site of another network (snp-arrays): part is its own name, encoder its position

    def __post_init__(self):
        if self.external:
            if not isinstance(self.part, str) or not self.part or "/" in self.part:
                raise ValueError(f"an external site needs a non-empty name without '/', got {self.part!r}")
            if isinstance(self.encoder, bool) or not isinstance(self.encoder, int) or self.encoder < 0:
                raise ValueError(f"an external site needs its position >= 0, got {self.encoder!r}")
        elif self.encoder is None:
            if self.part != "tokens":
                raise ValueError(f"the tokenizer site has part 'tokens', got {self.part!r}")
        elif isinstance(self.encoder, bool) or not isinstance(self.encoder, int) or self.encoder < 0:
            raise ValueError(f"encoder must be an index >= 0 (counted from 0) or None, got {self.encoder!r}")
        elif self.part not in SITES:
            raise ValueError(f"unknown site {self.part!r}; choose from {SITES}")

    @classmethod
    def tokens(cls) -> "Site":
        return cls(None, "tokens")

    @classmethod
    def named(cls, name, index) -> "Site":
        """A site of any network, by its own name: a minicct capture name parses as usual ("enc2.out"); any other
        name ("block3", "fc1") becomes an external site at position `index` (counted from 0, file order)."""
        try:
            return cls.parse(name)
        except ValueError:
            return cls(int(index), str(name), external=True)

    @classmethod
    def parse(cls, name) -> "Site":
        """From a capture name: "tokens" or "enc{e}.{part}" (a Site passes through)."""
        if isinstance(name, Site):
            return name
        if name == "tokens":
            return cls.tokens()
        head, _, part = str(name).partition(".")
        if not (head.startswith("enc") and head[3:].isdigit() and part):
            raise ValueError(f"not a site name: {name!r}; expected 'tokens' or 'enc{{e}}.{{part}}' with part "
                             f"in {SITES}")
        return cls(int(head[3:]), part)

    @property
    def name(self) -> str:
        """The capture name (model.forward(capture=...)): "tokens" or "enc{e}.{part}"."""
        if self.external:
            return self.part
        return "tokens" if self.encoder is None else f"enc{self.encoder}.{self.part}"

    @property
    def depth(self) -> int:
        """Position along the network: 0 for the tokenizer, e + 1 for encoder e (x axis of the plots)."""
        return 0 if self.encoder is None else self.encoder + 1

    @property
    def is_tokens(self) -> bool:
        return self.encoder is None

    def label(self, part=True, short=False) -> str:
        """The one label formatter: "tokenizer", or "encoder 2 out" (part=False: "encoder 2"; short=True:
        "enc 2 out"). Encoders are shown counted from 1; an external site shows its own name."""
        if self.external:
            return self.part
        if self.encoder is None:
            return "tokenizer"
        return f"{'enc' if short else 'encoder'} {self.encoder + 1}" + (f" {self.part}" if part else "")

    def __str__(self):
        return self.name


def site_names(num_layers, sites=("out",), include_tokens=True) -> list:
    """Capture names to analyse, in forward order: ["tokens", "enc0.out", "enc1.out", ...]."""
    bad = [s for s in sites if s not in SITES]
    if bad:
        raise ValueError(f"unknown sites {bad}; choose from {SITES}")
    names = ["tokens"] if include_tokens else []
    for e in range(num_layers):
        names += [Site(e, s).name for s in SITES if s in sites]
    return names
