"""Optimisers as update rules, separate from the model, and the learning-rate schedule.

A rule holds its own state (velocities, moments) in dicts keyed like the parameters and updates the
parameter arrays IN PLACE (no new arrays per step): `opt.step(params, grads)`.

    SGD   (torch.optim.SGD):   g <- g + wd w ; b <- mu b + g ; step = g + mu b (Nesterov) or b ; w <- w - lr step
    AdamW (torch.optim.AdamW): w <- w (1 - lr wd) ; m <- b1 m + (1-b1) g ; v <- b2 v + (1-b2) g^2 ;
                               w <- w - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
Weight decay follows the CCT reference (timm add_weight_decay): no decay on 1-D parameters and on names
ending in ".bias" (all biases, LayerNorm weights and biases); conv and linear weights and the learnable
positional embedding are decayed. Frozen parameters (the sine positional embedding) are never updated.
"""
import math

import numpy as np


def decay_mask(params, frozen=()):
    """name -> True if weight decay applies (timm's rule: ndim > 1 and not a bias)."""
    return {k: (v.ndim > 1 and not k.endswith(".bias") and k not in frozen) for k, v in params.items()}


class _Rule:
    def __init__(self, lr, weight_decay, frozen):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        self.lr, self.weight_decay, self.frozen = lr, weight_decay, frozenset(frozen)
        self.t = 0
        self.state = {}

    def _check(self, params, grads):
        missing = [k for k in params if k not in self.frozen and k not in grads]
        if missing:
            raise ValueError(f"no gradient for parameters {missing[:5]}{'...' if len(missing) > 5 else ''}")
        for k, g in grads.items():
            if k in params and g.shape != params[k].shape:
                raise ValueError(f"gradient of {k} has shape {g.shape}, parameter has {params[k].shape}")

    def state_dict(self):
        """Flat dict of arrays and scalars (for .npz checkpoints)."""
        out = {"t": np.asarray(self.t)}
        for slot, d in self.state.items():
            for k, v in d.items():
                out[f"{slot}/{k}"] = v
        return out

    def load_state_dict(self, sd):
        self.t = int(sd["t"])
        self.state = {}
        for key, v in sd.items():
            if key == "t":
                continue
            slot, name = key.split("/", 1)
            self.state.setdefault(slot, {})[name] = np.array(v)


class SGD(_Rule):
    """SGD with momentum, optional Nesterov, and coupled L2 weight decay (as torch.optim.SGD).

    `decay_all=True` decays every parameter (the SNP read-out recipe of the AFCC code); by default the
    timm rule above applies.
    """

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, frozen=(), decay_all=False):
        super().__init__(lr, weight_decay, frozen)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.decay_all = momentum, nesterov, decay_all

    def step(self, params, grads, lr=None):
        self._check(params, grads)
        lr = self.lr if lr is None else lr
        self.t += 1
        decay = decay_mask(params, self.frozen)
        buf = self.state.setdefault("momentum", {})
        for k, w in params.items():
            if k in self.frozen:
                continue
            g, owned = grads[k], False                                   # owned: g is a temporary of this step
            if self.weight_decay and (self.decay_all or decay[k]):
                g = np.multiply(w, self.weight_decay, dtype=w.dtype)     # g + wd w with one temporary
                g += grads[k]
                owned = True
            if self.momentum:
                b = buf.get(k)
                if b is None:
                    b = buf[k] = np.array(g, dtype=w.dtype)              # torch: first buffer = g
                else:
                    b *= self.momentum
                    b += g
                if self.nesterov:
                    t = np.multiply(b, self.momentum, dtype=w.dtype)     # g + mu b
                    t += g
                    g, owned = t, True
                else:
                    g, owned = b, False
            if owned:
                g *= lr                                                  # lr g, in place
                w -= g
            else:
                w -= lr * g


class AdamW(_Rule):
    """AdamW with decoupled weight decay (Loshchilov & Hutter, arXiv 1711.05101), as torch.optim.AdamW."""

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, frozen=()):
        super().__init__(lr, weight_decay, frozen)
        self.b1, self.b2 = betas
        self.eps = eps

    def step(self, params, grads, lr=None):
        self._check(params, grads)
        lr = self.lr if lr is None else lr
        self.t += 1
        decay = decay_mask(params, self.frozen)
        m_all = self.state.setdefault("m", {})
        v_all = self.state.setdefault("v", {})
        bc1 = 1.0 - self.b1 ** self.t
        bc2 = 1.0 - self.b2 ** self.t
        step_size = lr / bc1
        for k, w in params.items():
            if k in self.frozen:
                continue
            g = grads[k]
            m = m_all.get(k)
            if m is None:
                m = m_all[k] = np.zeros_like(w)
                v_all[k] = np.zeros_like(w)
            v = v_all[k]
            if self.weight_decay and decay[k]:
                w *= 1.0 - lr * self.weight_decay
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            denom = np.sqrt(v)
            denom *= 1.0 / math.sqrt(bc2)
            denom += self.eps
            w -= step_size * (m / denom)


def cosine_lr(epoch, base_lr, total_epochs, warmup_epochs=0, warmup_lr=1e-6, min_lr=1e-5):
    """timm CosineLRScheduler (warmup_prefix=False), as the CCT configs use it; `epoch` may be fractional.

        epoch < W:      lr = warmup_lr + epoch (base_lr - warmup_lr) / W
        W <= epoch < T: lr = min_lr + (base_lr - min_lr) (1 + cos(pi epoch / T)) / 2
        epoch >= T:     lr = min_lr  (cool-down)
    """
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (base_lr - warmup_lr) / warmup_epochs
    if epoch < total_epochs:
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * epoch / total_epochs))
    return min_lr
