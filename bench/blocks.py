"""What each block costs per epoch: one BlockNet member (K = 1) trained with torch's Adam through autograd, on
California-housing-sized data (13,209 x 14: 9 numeric columns), batch 256, 2 x 256 relu, against the same net
without blocks; and a stack of K = 8 members per member.

    python bench/blocks.py [--rows 13209] [--epochs 3] [--threads 2]

Prints ms per epoch (median of the epochs after a warm-up one) and the ratio to the plain net of the same run.
The plain net here goes through the same BlockNet code (no hand-written kernel), so the ratios isolate the blocks.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from automlp.blocks import BlockConfig
from automlp.blocks.net import BlockNet, compute_bins

VARIANTS = {
    "plain": BlockConfig(n_numeric=9),
    "feature_scaling": BlockConfig(n_numeric=9, feature_scaling=True),
    "periodic (16 freq, d 16)": BlockConfig(n_numeric=9, embedding="periodic"),
    "piecewise_linear (16 bins, d 16)": BlockConfig(n_numeric=9, embedding="piecewise_linear"),
    "tabm_mini x8": BlockConfig(n_numeric=9, arch="tabm_mini", k_ensemble=8),
    "tabm x8": BlockConfig(n_numeric=9, arch="tabm", k_ensemble=8),
    "tabm_mini x8 + piecewise_linear": BlockConfig(n_numeric=9, embedding="piecewise_linear", arch="tabm_mini",
                                                   k_ensemble=8),
    "tabm_mini x32": BlockConfig(n_numeric=9, arch="tabm_mini", k_ensemble=32),
}


def epoch_ms(cfg: BlockConfig, X: torch.Tensor, y: torch.Tensor, k: int, epochs: int, batch: int) -> float:
    bins = [compute_bins(X[:, :9], cfg.n_bins)] * k if cfg.embedding == "piecewise_linear" else None
    net = BlockNet(X.shape[1], 1, (256, 256), "relu", cfg, "regression", n_members=k, bins=bins)
    for m in range(k):
        net.init_member(m, m)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(X)).split(batch):
            opt.zero_grad(set_to_none=True)
            net.member_losses(X[idx], y[idx]).sum().backward()
            opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=13209)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stack", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(args.rows, 14, generator=gen)
    y = X[:, :3].sum(1) + torch.randn(args.rows, generator=gen) * 0.1
    base = base_k = None
    print(f"{'block':34} {'ms/epoch K=1':>12} {'x plain':>8} {f'ms/member-epoch K={args.stack}':>22} {'x plain':>8}")
    for name, cfg in VARIANTS.items():
        one = epoch_ms(cfg, X, y, 1, args.epochs, 256)
        many = epoch_ms(cfg, X, y, args.stack, args.epochs, 256) / args.stack
        base, base_k = base or one, base_k or many
        print(f"{name:34} {one:12.1f} {one / base:8.2f} {many:22.1f} {many / base_k:8.2f}", flush=True)


if __name__ == "__main__":
    main()
