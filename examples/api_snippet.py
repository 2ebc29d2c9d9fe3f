"""The README's Python API example ("## The Python API"), the same code: Barlow Twins from its parts.

    python examples/api_snippet.py        # a few seconds on a CPU; writes backbone.safetensors here
"""

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import FakeData

from barlowtwins import (
    LARS,
    BarlowTwinsLoss,
    Projector,
    TwoViewTransform,
    WarmupCosine,
    create_backbone,
    lars_param_groups,
    load_backbone,
    save_backbone,
)

image_size, batch_size, epochs = 32, 16, 2
views = TwoViewTransform(image_size=image_size)            # PIL image -> (view1, view2), the paper's augmentations
data = FakeData(64, (3, 40, 40), transform=views)          # any PIL data set; a folder: image_folder(root, views)
loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)

backbone = create_backbone("resnet18", stem="small", width=16)  # any torchvision classifier; fc -> Identity
projector = Projector(backbone.num_features, "512-512")         # the paper: 8192-8192-8192
model = torch.nn.Sequential(backbone, projector)
loss_fn = BarlowTwinsLoss(lambd=0.0051)                         # distributed=True: C global over ranks

opt = LARS(lars_param_groups(model), weight_decay=1.5e-6)       # base rates 0.2 / 0.0048 per 256 samples
sched = WarmupCosine(opt, total_steps=epochs * len(loader),     # warm-up (paper: 10 epochs), cosine to 1/1000
                     warmup_steps=len(loader), batch_size=batch_size)

for epoch in range(epochs):
    for (x1, x2), _ in loader:
        loss = loss_fn(model(x1), model(x2))                    # a scalar; return_parts=True for the terms
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    print(f"epoch {epoch}: loss {loss.item():.2f}")

save_backbone(backbone, "backbone.safetensors", image_size=image_size)  # weights, architecture, size
net = load_backbone("backbone.safetensors")                     # the same network, no flags, eval mode
print(net(torch.randn(2, 3, image_size, image_size)).shape)    # (2, 128) features
