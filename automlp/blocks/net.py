"""`BlockNet`: K members of one structure (embeddings, feature scaling, MLP / TabM-mini / TabM) as one stacked
module, every parameter with a leading member dim K (the engine contract's form).

The same class is the stack and the single model: `member(k)` is a BlockNet with K = 1 holding member k's
parameters, a plain module that TorchScript and ONNX export, computing exactly member k. `flatten()` puts the
stack's parameters in one flat (K, P) tensor (weights first, so weight decay acts on the prefix [:, :n_decay])
with views per parameter and a matching `flat_grad`, the layout the engine's stacked optimizer steps; without it
the parameters are ordinary tensors any torch optimizer can step.

Why not the packages' modules: `rtdl_num_embeddings` and `tabm` hold one model (TabM's k members are one model
with shared weights); a population stack needs K independent such models with per-member hyperparameters in one
set of tensors. The math is theirs, checked member by member against their modules in tests/test_blocks.py.

Shapes: x is (B, d) shared by all members or (K, B, d) own rows; `forward_members` gives (K, B, E, out) for the
E = k_ensemble internal members; `forward` gives (K, B, out): the members' mean (regression) or the log of their
mean probability (classification, so softmax of the output is the averaged probability; E = 1: the logits).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from automlp.blocks.config import BlockConfig

# Grads are views of one flat (K, P) tensor on purpose (see flatten); autograd notes that such strides are not its
# preferred layout and still accumulates into them in place.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


def _activate(h: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(h)
    if name == "gelu":
        return F.gelu(h)
    if name == "silu":
        return F.silu(h)
    if name == "tanh":
        return torch.tanh(h)
    if name == "logistic":
        return torch.sigmoid(h)
    if name == "leaky_relu":
        return F.leaky_relu(h)
    return h  # identity


class _Layer(nn.Module):
    """A hidden layer of every member: y = ((h * r) @ w) * s + b on (K, B, E, in). r, s empty: no adapter."""

    def __init__(self, k: int, n_in: int, n_out: int, e: int, r: bool, s: bool, own_bias: bool) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(k, n_in, n_out))
        self.b = nn.Parameter(torch.zeros(k, e if own_bias else 1, n_out))
        self.r = nn.Parameter(torch.ones(k, e if r else 0, n_in))
        self.s = nn.Parameter(torch.ones(k, e if s else 0, n_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.r.shape[1] > 0:
            h = h * self.r.unsqueeze(1)
        k, b, e, n = h.shape
        y = torch.bmm(h.reshape(k, b * e, n), self.w).reshape(k, b, e, self.w.shape[2])
        if self.s.shape[1] > 0:
            y = y * self.s.unsqueeze(1)
        return y + self.b.unsqueeze(1)


def compute_bins(X: torch.Tensor, n_bins: int) -> list[torch.Tensor]:
    """Quantile bin edges of each column of the training rows X (n, F), as rtdl_num_embeddings.compute_bins
    (at most n_bins bins, repeated quantiles merged); a column with one value gets the one bin [v, v + 1]."""
    X = X.float()
    q = torch.quantile(X, torch.linspace(0.0, 1.0, n_bins + 1).to(X), dim=0).T
    return [e.unique() if len(e.unique()) > 1 else torch.stack([e[0], e[0] + 1]) for e in q]


def encoding_params(bins: Sequence[torch.Tensor], n_slots: int) -> tuple[torch.Tensor, ...]:
    """weight, bias (F, n_slots) and the one-bin mask (F,) of the piecewise-linear encoding of `bins`, laid out as
    rtdl's _PiecewiseLinearEncodingImpl: the first n-1 bins at the start, the last bin in the last slot."""
    f = len(bins)
    weight, bias, single = torch.zeros(f, n_slots), torch.zeros(f, n_slots), torch.zeros(f)
    for i, edges in enumerate(bins):
        width = edges.diff()
        w, b = 1.0 / width, -edges[:-1] / width
        n = len(width)
        weight[i, -1], bias[i, -1] = w[-1], b[-1]
        weight[i, : n - 1], bias[i, : n - 1] = w[:-1], b[:-1]
        single[i] = float(n == 1)
    return weight, bias, single


class BlockNet(nn.Module):
    """K members: numeric embedding -> optional feature scaling -> hidden layers -> output layer(s)."""

    def __init__(self, n_inputs: int, n_outputs: int, widths: Sequence[int], activation: str, blocks: BlockConfig,
                 task: str, n_members: int = 1, dropout: Sequence[float] | None = None,
                 bins: Sequence[Sequence[torch.Tensor]] | None = None) -> None:
        super().__init__()
        k, cfg = n_members, blocks
        self.n_members, self.n_inputs, self.n_outputs, self.cfg = k, n_inputs, n_outputs, cfg
        self.widths, self.task_name = tuple(widths), task
        self.activation, self.classification = activation, task == "classification"
        self.embedding, self.arch, self.n_numeric, self.e = cfg.embedding, cfg.arch, cfg.n_embedded, cfg.k_ensemble
        f, de = cfg.n_embedded, cfg.d_embedding
        nf, nb = cfg.n_frequencies, (cfg.n_bins if cfg.embedding == "piecewise_linear" else 0)
        self.emb_freq = nn.Parameter(torch.zeros(k, f if cfg.embedding == "periodic" else 0, nf))
        self.emb_w0 = nn.Parameter(torch.zeros(k, f if nb else 0, de))  # PLE version B: the linear embedding
        self.emb_b0 = nn.Parameter(torch.zeros(k, f if nb else 0, de))
        n_enc = 2 * nf if cfg.embedding == "periodic" else nb
        self.emb_w = nn.Parameter(torch.zeros(k, f, n_enc, de))
        self.emb_b = nn.Parameter(torch.zeros(k, f if cfg.embedding == "periodic" else 0, de))
        self.register_buffer("enc_w", torch.zeros(k, f if nb else 0, nb))
        self.register_buffer("enc_b", torch.zeros(k, f if nb else 0, nb))
        self.register_buffer("enc_single", torch.zeros(k, f if nb else 0))
        d_in = cfg.first_layer_inputs(n_inputs)
        self.scale = nn.Parameter(torch.ones(k, d_in if cfg.feature_scaling else 0))
        sizes = [d_in, *self.widths]
        tabm, e = cfg.arch == "tabm", cfg.k_ensemble
        self.layers = nn.ModuleList([
            _Layer(k, a, b, e, r=tabm or (cfg.arch == "tabm_mini" and i == 0), s=tabm, own_bias=tabm)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))])
        e_out = 1 if cfg.arch == "mlp" else e
        self.w_out = nn.Parameter(torch.zeros(k, e_out, sizes[-1], n_outputs))
        self.b_out = nn.Parameter(torch.zeros(k, e_out, n_outputs))
        self.register_buffer("dropout", torch.as_tensor(list(dropout or [0.0] * k), dtype=torch.float32))
        self.any_dropout = bool((self.dropout > 0).any())
        self.flat: torch.Tensor | None = None
        if bins is not None:
            self.set_bins(bins)

    # ---- parameters -------------------------------------------------------------------------------------------

    def decayed(self) -> list[str]:
        """Names of the parameters weight decay acts on: the weights of linear maps (not biases, adapters,
        frequencies or scales, as in sklearn, RealMLP and TabM)."""
        names = ["emb_w", "emb_w0", "w_out"] + [f"layers.{i}.w" for i in range(len(self.layers))]
        return [n for n, _ in self.named_parameters() if n in names]

    @torch.no_grad()
    def set_bins(self, bins: Sequence[Sequence[torch.Tensor]]) -> None:
        """Member k's piecewise-linear bins (one edge tensor per numeric column), from its training rows."""
        for k, member_bins in enumerate(bins):
            w, b, single = encoding_params(member_bins, self.enc_w.shape[2])
            self.enc_w[k], self.enc_b[k], self.enc_single[k] = w, b, single

    @torch.no_grad()
    def init_member(self, k: int, seed: int) -> None:
        """Member k's initial weights, drawn in a fixed order from a generator seeded with `seed` (so a member
        starts the same in any stack): linear maps U(+-1/sqrt(fan_in)) as nn.Linear; periodic frequencies
        N(0, scale) truncated at 3 scales; the PLE map zero (version B); TabM's first adapter random signs (normal
        with embeddings), one value per feature chunk, other adapters 1, biases alike across internal members."""
        gen, cfg = torch.Generator().manual_seed(seed), self.cfg

        def uniform(t: torch.Tensor, fan_in: int) -> None:
            bound = fan_in ** -0.5
            t.copy_(torch.rand(t.shape, generator=gen) * 2 * bound - bound)

        if cfg.embedding == "periodic":
            s = cfg.frequency_init_scale
            freq = torch.empty(self.emb_freq.shape[1:])
            nn.init.trunc_normal_(freq, 0.0, s, a=-3 * s, b=3 * s, generator=gen)
            self.emb_freq[k] = freq
            uniform(self.emb_w[k], self.emb_w.shape[2])
            uniform(self.emb_b[k], self.emb_w.shape[2])
        elif cfg.embedding == "piecewise_linear":
            uniform(self.emb_w0[k], cfg.d_embedding)
            uniform(self.emb_b0[k], cfg.d_embedding)
            self.emb_w[k] = 0.0
        self.scale[k] = 1.0
        for i, layer in enumerate(self.layers):
            n_in = layer.w.shape[1]
            uniform(layer.w[k], n_in)
            bias = torch.empty(layer.b.shape[2])
            uniform(bias, n_in)
            layer.b[k] = bias  # broadcast over internal members: all start alike (TabM)
            layer.s[k] = 1.0
            layer.r[k] = 1.0
            if i == 0 and layer.r.shape[1] > 0:
                layer.r[k] = self._first_adapter(gen)
        uniform(self.w_out[k], self.w_out.shape[2])
        uniform(self.b_out[k], self.w_out.shape[2])

    def _first_adapter(self, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        chunks = [cfg.d_embedding] * cfg.n_embedded + [1] * (self.n_inputs - cfg.n_embedded)
        n = len(chunks)
        if cfg.embedding == "none":
            draw = torch.randint(0, 2, (self.e, n), generator=gen).float() * 2 - 1
        else:
            draw = torch.randn(self.e, n, generator=gen)
        return draw.repeat_interleave(torch.as_tensor(chunks), dim=1)

    def flatten(self) -> None:
        """Move every parameter into one flat (K, P) tensor (decayed ones first: `n_decay` columns) with a
        matching `flat_grad`; each parameter becomes a view of its slice (its .grad a view of flat_grad's)."""
        decayed = set(self.decayed())
        named = sorted(self.named_parameters(), key=lambda kv: kv[0] not in decayed)
        k = self.n_members
        sizes = [p[0].numel() for _, p in named]
        self.flat = torch.cat([p.detach().reshape(k, -1) for _, p in named], dim=1).contiguous()
        self.flat_grad = torch.zeros_like(self.flat)
        self.n_decay = sum(s for (n, _), s in zip(named, sizes) if n in decayed)
        offset = 0
        for (name, p), size in zip(named, sizes):
            owner, attr = self._owner(name)
            view = nn.Parameter(self.flat[:, offset: offset + size].view(p.shape))
            view.grad = self.flat_grad[:, offset: offset + size].view(p.shape)
            setattr(owner, attr, view)
            offset += size

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        *path, attr = name.split(".")
        owner: nn.Module = self
        for part in path:
            owner = getattr(owner, part)
        return owner, attr

    def member(self, k: int, flat_row: torch.Tensor | None = None) -> ServedMember:
        """The plain, TorchScript-able model computing exactly member k (or member k with the weights of
        `flat_row`, a row of `flat`, e.g. its best epoch's): (B, d) -> (B, out), on the host."""
        one = self.member_net(k)
        if flat_row is not None:
            one.flatten()
            one.flat[0].copy_(flat_row)
            one.unflatten()
        return ServedMember(one)

    @torch.no_grad()
    def member_net(self, k: int) -> BlockNet:
        """Member k as a BlockNet of one (K = 1, ordinary parameters, on the host)."""
        one = BlockNet(self.n_inputs, self.n_outputs, self.widths, self.activation, self.cfg, self.task_name, 1,
                       [float(self.dropout[k])])
        mine = dict(self.named_parameters()) | dict(self.named_buffers())
        for name, t in list(one.named_parameters()) + list(one.named_buffers()):
            if name != "dropout":
                t.copy_(mine[name][k: k + 1].cpu())
        return one.eval()

    @torch.no_grad()
    def load_member(self, k: int, one: BlockNet) -> None:
        """Copy a K = 1 BlockNet's parameters and buffers into member k (the inverse of `member`)."""
        mine = dict(self.named_parameters()) | dict(self.named_buffers())
        for name, t in list(one.named_parameters()) + list(one.named_buffers()):
            if name != "dropout":
                mine[name][k] = t[0]

    # ---- compute ----------------------------------------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, d) -> (K, B, d_in): the numeric columns embedded, the others as they are."""
        f = self.n_numeric
        if f == 0:
            return x
        xn, rest = x[..., :f].unsqueeze(-1), x[..., f:]
        if self.embedding == "periodic":
            z = 2 * math.pi * self.emb_freq.unsqueeze(1) * xn
            z = torch.cat([torch.cos(z), torch.sin(z)], -1)
            h = torch.relu(torch.einsum("kbfi,kfio->kbfo", z, self.emb_w) + self.emb_b.unsqueeze(1))
        else:
            enc = self.enc_b.unsqueeze(1) + self.enc_w.unsqueeze(1) * xn
            if enc.shape[-1] > 1:
                last = enc[..., -1:]
                single = self.enc_single.unsqueeze(1).unsqueeze(-1) > 0
                enc = torch.cat([enc[..., :1].clamp_max(1.0), enc[..., 1:-1].clamp(0.0, 1.0),
                                 torch.where(single, last, last.clamp_min(0.0))], dim=-1)
            h = self.emb_b0.unsqueeze(1) + self.emb_w0.unsqueeze(1) * xn
            h = h + torch.einsum("kbfi,kfio->kbfo", enc, self.emb_w)
        return torch.cat([h.flatten(2), rest], dim=-1)

    def forward_members(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) or (K, B, d) -> (K, B, E, out): every internal member's output."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_members, x.shape[0], x.shape[1])
        h = self.embed(x)
        if self.scale.shape[1] > 0:
            h = h * self.scale.unsqueeze(1)
        h = h.unsqueeze(2)  # (K, B, 1, d_in): the first adapter (if any) fans it out to E members
        for layer in self.layers:
            h = _activate(layer(h), self.activation)
            if self.training and self.any_dropout:
                p = self.dropout.view(-1, 1, 1, 1)
                h = h * (torch.rand_like(h) >= p) / (1 - p)
        if h.shape[2] != self.w_out.shape[1]:
            h = h.expand(h.shape[0], h.shape[1], self.w_out.shape[1], h.shape[3])
        return torch.einsum("kbei,keio->kbeo", h, self.w_out) + self.b_out.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forward_members(x)
        if y.shape[2] == 1:
            return y[:, :, 0]
        if self.classification:
            return torch.logsumexp(torch.log_softmax(y, dim=-1), dim=2) - math.log(y.shape[2])
        return y.mean(dim=2)

    def row_losses(self, x: torch.Tensor, y: torch.Tensor, label_smoothing: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Each member's loss on each row (K, B): the mean over its internal members (TabM), on a shared batch
        (y of (B,)) or own rows (y of (K, B)). `label_smoothing`: one value, or one per member (K,), as
        F.cross_entropy's: (1 - eps) * nll + eps * the mean over classes of -log p."""
        out = self.forward_members(x)
        k, b, e, c = out.shape
        y = (y.expand(k, b) if y.dim() == 1 else y).unsqueeze(2).expand(k, b, e)
        if self.classification:
            logp = torch.log_softmax(out, dim=-1)
            nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            eps = torch.as_tensor(label_smoothing, dtype=out.dtype, device=out.device).reshape(-1, 1, 1)
            return ((1 - eps) * nll + eps * -logp.mean(dim=-1)).mean(dim=2)
        return (out.squeeze(-1) - y).square().mean(dim=2)

    def member_losses(self, x: torch.Tensor, y: torch.Tensor, label_smoothing: torch.Tensor | float = 0.0) -> torch.Tensor:
        """Each member's training loss (K,): the mean of its internal members' losses over the batch (TabM)."""
        return self.row_losses(x, y, label_smoothing).mean(dim=1)

    # ---- as a stack in the engine ------------------------------------------------------------------------------

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        """(inputs, outputs) of each layer as evaluated, internal members counted in (memory bounds only)."""
        return [(layer.w.shape[1], layer.w.shape[2] * self.e) for layer in self.layers]

    def unflatten(self) -> None:
        """Every parameter its own tensor again (no flat layout)."""
        for name, p in list(self.named_parameters()):
            owner, attr = self._owner(name)
            setattr(owner, attr, nn.Parameter(p.detach().clone()))
        self.flat = None

    @torch.no_grad()
    def select(self, rows: torch.Tensor) -> None:
        """Keep only the given members (their parameters, buffers and dropout), laid out flat again."""
        for name, p in list(self.named_parameters()):
            owner, attr = self._owner(name)
            setattr(owner, attr, nn.Parameter(p.detach()[rows].clone()))
        for name, buf in list(self.named_buffers()):
            owner, attr = self._owner(name)
            setattr(owner, attr, buf[rows].clone())
        self.n_members = len(rows)
        self.any_dropout = bool((self.dropout > 0).any())
        self.flatten()

    @torch.no_grad()
    def set_member_dropout(self, k: int, rate: float) -> None:
        self.dropout[k] = rate
        self.any_dropout = bool((self.dropout > 0).any())


class ServedMember(nn.Module):
    """member(k) as export wants it: (B, d) -> (B, out). `training_loss` is what the trainer minimises: the mean of
    the internal members' losses (TabM), with label smoothing for classification when asked."""

    def __init__(self, net: BlockNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]

    @torch.jit.unused
    def decayed(self) -> list[str]:
        return [f"net.{name}" for name in self.net.decayed()]

    @torch.jit.unused
    def training_loss(self, x: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:  # noqa
        return self.net.member_losses(x, y, label_smoothing)[0]
