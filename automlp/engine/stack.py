"""K members trained as one `StackedMLP` with one `StackedOptimizer`, behind the methods the loop calls.

Rows and batches. When every live member trains on the shared data in the shared batch order, a step feeds one
(B, d) batch to all members (the fast case: the first layer's product is one wide batched GEMM over a stride-0
input). Otherwise each member gets its own rows: member k's batch s is rows perm_k[s : s + batch_size] of its own
data, exactly the batch it would see alone. Their rows sit in one pool (the distinct data sets, concatenated), so
a step is one gather of (K, B) pool indexes. Members with fewer rows run out of batches first; in the steps they
sit out, neither their weights nor their optimizer state move (`StackedOptimizer.step(rows)`).

A frozen row (its member stopped and no refill came) has lr 0 and its loss masked out with where (not a product,
so a diverged member's NaN stays out), so the others' gradients, updates and batches are exactly what they were.

The fast path: while every live member trains on the shared data, the hand-written `StackKernel` (kernel.py)
does forward, backward and update with no autograd, and owns the optimizer state. The first epoch that needs
members' own data (a refill with its own rows) hands its state over to autograd + `StackedOptimizer` for good
(`_to_autograd`): one state, so the update stays exact across the switch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automlp.data import TrainData
from automlp.engine.config import TrainConfig, member_losses, row_losses, seed_everything
from automlp.engine.kernel import StackKernel
from automlp.engine.nets import StackedMLP
from automlp.engine.optim import StackedOptimizer, hyperparameters
from automlp.model import MLPConfig, build_mlp

EVAL_CHUNK_ELEMS = 1 << 24  # bound on K * rows * width held at once when evaluating
USE_KERNEL = True  # False: every stack on autograd (tests compare the two)
KERNEL_GATHER_BYTES = 1 << 28


class _Pool:
    """The rows of one split (train or val) of every member, concatenated once per distinct data set."""

    def __init__(self, datas: Sequence[TrainData], split: str):
        tensors, offsets, seen = [], {}, 0
        self.offset, self.n = [], []
        for d in datas:
            X, y = (d.X_train, d.y_train) if split == "train" else (d.X_val, d.y_val)
            if id(d) not in offsets:
                offsets[id(d)] = seen
                tensors.append((X, y))
                seen += len(X)
            self.offset.append(offsets[id(d)])
            self.n.append(len(X))
        self.X = tensors[0][0] if len(tensors) == 1 else torch.cat([X for X, _ in tensors])
        self.y = tensors[0][1] if len(tensors) == 1 else torch.cat([y for _, y in tensors])

    def indexes(self, perms: Sequence[torch.Tensor | None], live: Sequence[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, L) pool indexes (row k's perm shifted to its data, padded) and their (K, L) validity mask."""
        length = max(n for n, on in zip(self.n, live) if on)
        dev = self.X.device
        idx = torch.zeros(len(perms), length, dtype=torch.long, device=dev)
        valid = torch.zeros(len(perms), length, device=dev)
        for k, (perm, off, n, on) in enumerate(zip(perms, self.offset, self.n, live)):
            if on:
                idx[k, :n] = (torch.arange(n, device=dev) if perm is None else perm) + off
                valid[k, :n] = 1.0
        return idx, valid


class StackStepper:
    """K rows of one structural key; each row holds one member (or nothing, frozen, after it stopped)."""

    def __init__(self, nets: Sequence[MLPConfig], configs: Sequence[TrainConfig], datas: Sequence[TrainData],
                 shared: TrainData, dropout_seed: int):
        first = nets[0]
        self.blocks = not first.plain  # a stack of automlp.blocks nets (embeddings, TabM): autograd, own loss
        if self.blocks:
            self.net = _block_stack(nets, configs, datas, shared.device)
        else:
            self.net = StackedMLP(first.n_inputs, first.n_outputs, [m.widths for m in nets], first.activation,
                                  dropout=[m.dropout for m in nets], device=shared.device)
            for k, (mlp, tc) in enumerate(zip(nets, configs)):
                seed_everything(tc.seed)  # member k starts from the weights a K = 1 training of it starts from
                self.net.load_member(k, build_mlp(mlp))
        self.net.generator = torch.Generator(device=shared.device).manual_seed(dropout_seed)
        self.configs = list(configs)
        self.smoothing = torch.tensor([c.label_smoothing for c in configs], device=shared.device)
        self.best = self.net.flat.detach().clone()
        self.batch_size, self.task, self.shared = configs[0].batch_size, shared.task, shared
        self.datas = list(datas)
        self.live = [True] * len(nets)
        self.scales = [1.0] * len(nets)
        self.opt: StackedOptimizer | None = None
        self.kernel: StackKernel | None = None
        # the kernel: plain MLPs without label smoothing (its loss is the plain one); blocks take autograd
        plain = not self.blocks and not any(c.label_smoothing for c in configs)
        if USE_KERNEL and plain and StackKernel.supports(first.activation, configs[0].optimizer, self.net.flat):
            self.kernel = self._new_kernel()
        else:
            self.opt = StackedOptimizer(self.net.flat, self.net.flat_grad, configs[0].optimizer,
                                        hyperparameters(configs), n_decay=self._n_decay())
        self._pools()

    def _new_kernel(self) -> StackKernel:
        cs, net = self.configs, self.net
        return StackKernel(net.flat, net.layer_sizes, net.activation, self.task, cs[0].optimizer,
                           lr=[c.lr * s for c, s in zip(cs, self.scales)], alpha=[c.alpha for c in cs],
                           betas=[c.betas for c in cs], momentum=[c.momentum for c in cs],
                           nesterov=[c.nesterov and c.momentum > 0 for c in cs],
                           dropout=net.dropout.view(-1).tolist(), widths=net.member_widths, generator=net.generator)

    @property
    def n_rows(self) -> int:
        return self.net.n_members

    def _n_decay(self) -> int:
        return self.net.n_decay if self.blocks else self.net.n_weights

    def _member_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.blocks:  # TabM: the mean of its internal members' losses; label smoothing per member
            return self.net.member_losses(x, y, self.smoothing)
        return member_losses(self.net(x), y, self.task)

    def _row_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.blocks:
            return self.net.row_losses(x, y, self.smoothing)
        return row_losses(self.net(x), y, self.task)

    def _pools(self) -> None:
        self.train_pool, self.val_pool = _Pool(self.datas, "train"), _Pool(self.datas, "val")

    def set_lr_scales(self, scales: list[float]) -> None:
        self.scales = list(scales)
        if self.kernel is not None:
            self.kernel.set_lr([c.lr * s for c, s in zip(self.configs, scales)])
            self.kernel.set_active(self.live)
        else:
            self.opt.set_lr_scale(scales)

    def freeze(self, row: int) -> None:
        self.live[row] = False

    # ---- one epoch ------------------------------------------------------------------------------------------

    def train_epoch(self, perms: list[torch.Tensor | None]) -> torch.Tensor:
        """One pass of every live member over its rows; (K,) mean training losses, on the device (no sync)."""
        self.net.train()
        live_rows = [k for k, on in enumerate(self.live) if on]
        shared = perms[live_rows[0]]
        one_order = all(perms[k] is shared for k in live_rows)
        X = self.shared.X_train
        # the kernel gathers each member's own order as a (K, n, d) copy per epoch: only while that stays small
        fits = one_order or self.n_rows * X.numel() * X.element_size() <= KERNEL_GATHER_BYTES
        if self.kernel is not None and fits and all(self.datas[k] is self.shared for k in live_rows):
            # one batch order for all, or each member its own (a frozen row follows the first)
            order = shared if one_order else torch.stack([shared if p is None else p for p in perms])
            return self.kernel.train_epoch(X, self.shared.y_train, order, self.batch_size)
        if self.kernel is not None:
            self._to_autograd()
        if all(self.datas[k] is self.shared and perms[k] is shared for k in live_rows):
            return self._shared_epoch(shared)
        return self._own_rows_epoch(perms)

    def _shared_epoch(self, perm: torch.Tensor) -> torch.Tensor:
        X, y = self.shared.X_train, self.shared.y_train
        n, bs = len(X), min(self.batch_size, len(X))
        live = torch.tensor(self.live, device=X.device)
        total = torch.zeros(self.n_rows, device=X.device)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            losses = self._member_losses(X.index_select(0, idx), y.index_select(0, idx))
            self.opt.zero_grad()
            torch.where(live, losses, 0.0).sum().backward()
            self.opt.step()
            total += losses.detach() * idx.shape[0]  # stays on the device: no sync per batch
        return total / n

    def _own_rows_epoch(self, perms: list[torch.Tensor | None]) -> torch.Tensor:
        pool, k = self.train_pool, self.n_rows
        idx, valid = pool.indexes(perms, self.live)
        bs = self.batch_size
        total = torch.zeros(k, device=pool.X.device)
        for s in range(0, idx.shape[1], bs):
            ix, vb = idx[:, s:s + bs], valid[:, s:s + bs]
            xb = pool.X.index_select(0, ix.reshape(-1)).view(k, ix.shape[1], -1)
            yb = pool.y.index_select(0, ix.reshape(-1)).view(k, ix.shape[1])
            summed = torch.where(vb > 0, self._row_losses(xb, yb), 0.0).sum(1)
            self.opt.zero_grad()
            (summed / vb.sum(1).clamp_min(1.0)).sum().backward()  # each member's mean over its own batch
            stepping = [r for r in range(k) if self.live[r] and s < pool.n[r]]
            self.opt.step(None if len(stepping) == sum(self.live) else stepping)
            total += summed.detach()
        return total / torch.tensor([float(max(n, 1)) for n in pool.n], device=total.device)

    @torch.no_grad()
    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        """Per-member mean validation loss (K,) and the outputs on the validation rows: one (K, N, C) tensor when
        the members share them, else each member's own."""
        self.net.eval()
        widest = max(o for _, o in self.net.layer_sizes)
        chunk = max(1, EVAL_CHUNK_ELEMS // (self.n_rows * widest))
        if all(d is self.shared for d, on in zip(self.datas, self.live) if on):
            X, y = self.shared.X_val, self.shared.y_val
            out = torch.cat([self.net(X[s:s + chunk]) for s in range(0, len(X), chunk)], dim=1)
            return member_losses(out, y, self.task), out
        pool = self.val_pool
        idx, valid = pool.indexes([None] * self.n_rows, self.live)
        k, length = idx.shape
        out = torch.cat([self.net(pool.X.index_select(0, idx[:, s:s + chunk].reshape(-1)).view(k, -1, pool.X.shape[1]))
                         for s in range(0, length, chunk)], dim=1)
        ys = pool.y.index_select(0, idx.reshape(-1)).view(k, length)
        losses = torch.where(valid > 0, row_losses(out, ys, self.task), 0.0).sum(1) / valid.sum(1).clamp_min(1.0)
        return losses, [out[r, :n] for r, n in enumerate(pool.n)]

    # ---- members --------------------------------------------------------------------------------------------

    def snapshot(self, rows: list[int]) -> None:
        rows_t = torch.tensor(rows, device=self.best.device)
        self.best[rows_t] = self.net.flat[rows_t]

    def export(self, row: int) -> nn.Module:
        return self.net.member(row, self.best[row])

    def load(self, row: int, net: MLPConfig, config: TrainConfig, data: TrainData) -> None:
        """A refill: fresh weights from its seed, fresh optimizer state, its own hyperparameters and rows."""
        seed_everything(config.seed)
        self.configs[row] = config
        self.smoothing[row] = config.label_smoothing
        if self.blocks:
            _load_block_member(self.net, row, net, data)
            self.opt.set_member(row, hyperparameters([config]))
        else:
            state = self._kernel_state() if self.kernel is not None else None
            move = self.net.set_member(row, net, build_mlp(net))
            if move is not None:  # the stack grew wider: every (K, P) tensor follows the new layout
                self.best = move(self.best)
                if self.opt is not None:
                    self.opt.relayout(move, self.net.flat, self.net.flat_grad, self.net.n_weights)
            if self.kernel is not None:
                self._rebuild_kernel([move(t) for t in state[0]] if move is not None else state[0], state[1])
                self.kernel.reset_member(row)
            else:
                self.opt.set_member(row, hyperparameters([config]))
        self.best[row] = self.net.flat[row]
        self.live[row] = True
        if self.datas[row] is not data:
            self.datas[row] = data
            self._pools()

    def compact(self, rows: list[int]) -> None:
        """Keep only `rows` (the live ones): the work shrinks with the stack."""
        rows_t = torch.tensor(rows, device=self.best.device)
        state = self._kernel_state() if self.kernel is not None else None
        self.net.select(rows_t)
        if self.opt is not None:
            self.opt.select(rows_t, self.net.flat, self.net.flat_grad)
        self.best = self.best[rows_t].contiguous()
        self.smoothing = self.smoothing[rows_t]
        self.configs, self.datas = [self.configs[r] for r in rows], [self.datas[r] for r in rows]
        self.live, self.scales = [self.live[r] for r in rows], [self.scales[r] for r in rows]
        if state is not None:
            self._rebuild_kernel([t[rows_t] for t in state[0]], state[1][rows_t])
        self._pools()

    # ---- the kernel's optimizer state, as (K, P) tensors in the stack's layout ---------------------------------
    # StackKernel keeps each state as per-layer weight blocks and one bias block (their concatenation is the
    # stack's row layout) and its step counts as a (K,) tensor; these two read and write exactly that.

    def _kernel_state(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [torch.cat([*blocks, bias], dim=1) for blocks, bias, _ in self.kernel.state], self.kernel.steps.clone()

    @torch.no_grad()
    def _rebuild_kernel(self, states: list[torch.Tensor], steps: torch.Tensor) -> None:
        self.kernel = self._new_kernel()
        for (blocks, bias, _), flat in zip(self.kernel.state, states):
            src_blocks, src_bias = self.kernel._split(flat)
            for dst, src in zip([*blocks, bias], [*src_blocks, src_bias]):
                dst.copy_(src)
        self.kernel.steps.copy_(steps)
        self.kernel.set_active(self.live)

    def _to_autograd(self) -> None:
        """Hand the kernel's optimizer state to autograd + StackedOptimizer, for the rest of this stack's life."""
        states, steps = self._kernel_state()
        self.kernel = None
        self.opt = StackedOptimizer(self.net.flat, self.net.flat_grad, self.configs[0].optimizer,
                                    hyperparameters(self.configs), n_decay=self._n_decay())
        with torch.no_grad():
            for dst, src in zip(self.opt.state, states):
                dst.copy_(src)
            self.opt.hp["steps"].copy_(steps.view(-1, 1))
        self.opt.set_lr_scale(self.scales)



def _block_stack(nets: Sequence[MLPConfig], configs: Sequence[TrainConfig], datas: Sequence[TrainData],
                 device: torch.device) -> nn.Module:
    """K nets of blocks (one structure) as one BlockNet laid out flat: member k starts from the weights a K = 1
    training of it starts from (`build_net` after seeding with its seed), with the bins of its own training rows."""
    from automlp.blocks.net import BlockNet

    first, b = nets[0], nets[0].blocks
    net = BlockNet(first.n_inputs, first.n_outputs, first.widths, first.activation, b, b.task, len(nets),
                   [m.dropout for m in nets], _bins(b, datas))
    for k, tc in enumerate(configs):
        seed_everything(tc.seed)
        net.init_member(k, int(torch.randint(0, 2**31 - 1, (1,))))  # the draw build_net makes
    net.to(device)
    net.flatten()
    return net


def _bins(blocks, datas: Sequence[TrainData]) -> list | None:
    if blocks.embedding != "piecewise_linear":
        return None
    from automlp.blocks.net import compute_bins

    return [compute_bins(d.X_train[:, : blocks.n_numeric].detach().cpu(), blocks.n_bins) for d in datas]


@torch.no_grad()
def _load_block_member(net: nn.Module, row: int, mlp: MLPConfig, data: TrainData) -> None:
    """A refill of a block stack: fresh weights from the seed just set, its own bins and dropout."""
    net.init_member(row, int(torch.randint(0, 2**31 - 1, (1,))))
    bins = _bins(mlp.blocks, [data])
    if bins is not None:
        from automlp.blocks.net import encoding_params

        w, b, single = encoding_params(bins[0], net.enc_w.shape[2])
        net.enc_w[row], net.enc_b[row], net.enc_single[row] = w, b, single
    net.set_member_dropout(row, mlp.dropout)
