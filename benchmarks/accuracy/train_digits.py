"""Train the small digits Swin, ViT and HaloNet and save their checkpoints (CPU, 1 thread: ~2 min ViT, ~6 min Swin).

    python benchmarks/accuracy/train_digits.py            # both
    python benchmarks/accuracy/train_digits.py --arch vit

Writes benchmarks/accuracy/checkpoints/digits_{arch}.safetensors (< 5 MB each).
Then measure precision with benchmarks/accuracy/measure_digits.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits  # noqa: E402


# (epochs, peak lr) that produced the committed checkpoints (1 thread, seed 0, batch 32).
RECIPES = {"vit": (40, 1e-3), "swin": (80, 3e-3), "halonet": (40, 3e-3)}


def train(arch: str, epochs: int, lr: float = 1e-3, batch: int = 32, seed: int = 0) -> float:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    xtr, ytr, xte, yte = digits.dataset()
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    model = digits.build(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i : i + batch]
            xb = xtr[idx]
            # Light augmentation: random shifts of up to 2 px (digits are centred).
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean() * 100
        model.train()
        print(f"{arch} epoch {epoch + 1}/{epochs} loss {loss.item():.3f} test top-1 {acc:.2f}%  {time.time() - start:.0f} s")
    digits.CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.eval().state_dict().items()}
    meta = {"arch": arch, "epochs": str(epochs), "lr": str(lr), "batch": str(batch), "seed": str(seed),
            "held_out_top1": f"{acc:.2f}"}
    save_file(sd, str(digits.checkpoint_path(arch)), metadata=meta)
    size = digits.checkpoint_path(arch).stat().st_size
    print(f"saved {digits.checkpoint_path(arch)} ({size / 1e6:.2f} MB), held-out top-1 {acc:.2f}%")
    return float(acc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(digits.ARCHS), action="append")
    ap.add_argument("--epochs", type=int, help="default: the committed checkpoint's recipe (RECIPES)")
    ap.add_argument("--lr", type=float, help="peak learning rate (one-cycle); default from RECIPES")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    for arch in args.arch or sorted(digits.ARCHS):
        epochs, lr = RECIPES[arch]
        train(arch, args.epochs or epochs, lr=args.lr or lr, batch=args.batch)


if __name__ == "__main__":
    main()
