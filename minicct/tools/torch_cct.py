"""The reference CCT in PyTorch (optional tool, never imported by the teaching core): a compact torch.nn.Module
with the official parameter names (SHI-Labs/Compact-Transformers src/cct.py, utils/tokenizer.py,
utils/transformers.py), so that minicct parameters load one to one. Used by `python -m minicct.bench` for the
side-by-side timing; torch is imported by the caller and passed in (torch is not a dependency).

    from minicct.tools.torch_cct import torch_cct
    net = torch_cct(torch, minicct.model.get_config("cct_7_3x1_32", num_classes=100))
"""


def torch_cct(torch, cfg):
    """The reference CCT (SHI-Labs/Compact-Transformers src/cct.py, utils/tokenizer.py, utils/transformers.py)
    as a compact torch.nn.Module, with the official parameter names so that our parameters load one to one."""
    nn, F = torch.nn, torch.nn.functional
    D, h = cfg.embedding_dim, cfg.num_heads

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(D, 3 * D, bias=False)
            self.attn_drop = nn.Dropout(cfg.attention_dropout)
            self.proj = nn.Linear(D, D)

        def forward(self, x):
            N, T, _ = x.shape
            q, k, v = self.qkv(x).reshape(N, T, 3, h, D // h).permute(2, 0, 3, 1, 4)
            attn = self.attn_drop(((q @ k.transpose(-2, -1)) * (D // h) ** -0.5).softmax(dim=-1))
            return self.proj((attn @ v).transpose(1, 2).reshape(N, T, D))

    class DropPath(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if self.p == 0.0 or not self.training:
                return x
            keep = 1.0 - self.p
            mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype)).floor_()
            return x.div(keep) * mask

    class Block(nn.Module):
        def __init__(self, dp):
            super().__init__()
            self.pre_norm = nn.LayerNorm(D)
            self.self_attn = Attention()
            self.linear1 = nn.Linear(D, cfg.ff_dim)
            self.dropout1 = nn.Dropout(cfg.dropout)
            self.norm1 = nn.LayerNorm(D)
            self.linear2 = nn.Linear(cfg.ff_dim, D)
            self.dropout2 = nn.Dropout(cfg.dropout)
            self.drop_path = DropPath(dp)

        def forward(self, x):
            x = x + self.drop_path(self.self_attn(self.pre_norm(x)))
            x = self.norm1(x)                                   # the reference's norm1 on the stream
            return x + self.drop_path(self.dropout2(self.linear2(self.dropout1(F.gelu(self.linear1(x))))))

    class Tokenizer(nn.Module):
        def __init__(self):
            super().__init__()
            ch = cfg.channels
            self.conv_layers = nn.Sequential(*[nn.Sequential(
                nn.Conv2d(ch[i], ch[i + 1], cfg.kernel_size, cfg.conv_stride, cfg.conv_padding, bias=False),
                nn.ReLU(),
                nn.MaxPool2d(cfg.pooling_kernel_size, cfg.pooling_stride, cfg.pooling_padding))
                for i in range(cfg.n_conv_layers)])

        def forward(self, x):
            return self.conv_layers(x).flatten(2).transpose(-2, -1)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_pool = nn.Linear(D, 1)
            if cfg.positional_embedding != "none":
                self.positional_emb = nn.Parameter(torch.zeros(1, cfg.seq_len, D),
                                                   requires_grad=cfg.positional_embedding == "learnable")
            self.dropout = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList([Block(dp) for dp in cfg.drop_path_rates()])
            self.norm = nn.LayerNorm(D)
            self.fc = nn.Linear(D, cfg.num_classes)

        def forward(self, x):
            if cfg.positional_embedding != "none":
                x = x + self.positional_emb
            x = self.dropout(x)
            for block in self.blocks:
                x = block(x)
            x = self.norm(x)
            a = F.softmax(self.attention_pool(x), dim=1).transpose(-1, -2)     # [N, 1, T]
            return self.fc((a @ x).squeeze(-2))

    class CCT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = Tokenizer()
            self.classifier = Classifier()

        def forward(self, x):
            return self.classifier(self.tokenizer(x))

    return CCT()
