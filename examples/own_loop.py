"""Barlow Twins on a folder of images, in a plain PyTorch loop; saves a backbone that `load_backbone` reads.

    python examples/own_loop.py path/to/images --image-size 64 --steps 1000 --batch-size 128
    python -c "import barlowtwins; print(barlowtwins.load_backbone('backbone.safetensors'))"
"""

import argparse

import torch
from torch.utils.data import DataLoader

import barlowtwins as bt


def main() -> None:
    parser = argparse.ArgumentParser(description="Barlow Twins on a folder of images, in a plain PyTorch loop.")
    parser.add_argument("folder", help="images at any depth (JPEG, PNG, ...)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=None, help="ResNet-18's first-stage channels (64: torchvision)")
    parser.add_argument("--projector", default="2048-2048-2048")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", default="backbone.safetensors")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = bt.image_folder(args.folder, transform=bt.TwoViewTransform(image_size=args.image_size))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers)
    if len(loader) == 0:
        raise SystemExit(f"{args.folder} has {len(data)} images, fewer than one batch of {args.batch_size}")

    stem = "small" if args.image_size <= 64 else "standard"  # a 3x3 stride-1 stem for small images
    model = bt.build_model("resnet18", args.projector, stem=stem, width=args.width).to(device)
    opt = bt.LARS(bt.lars_param_groups(model), weight_decay=1.5e-6)  # the paper's rates per 256 samples
    sched = bt.WarmupCosine(opt, total_steps=args.steps, warmup_steps=args.steps // 10, scale=args.batch_size / 256)

    step = 0
    while step < args.steps:
        for (x1, x2), _ in loader:
            loss = model(x1.to(device), x2.to(device))  # the Barlow Twins loss of the two views
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step}: loss {loss.item():.4f}")
            if step == args.steps:
                break

    bt.save_backbone(model.backbone, args.out)  # the weights and the architecture
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
