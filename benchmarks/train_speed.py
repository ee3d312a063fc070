"""Wall time of recipe A: this project's trainer vs a plain PyTorch loop over a DataLoader with per-sample CPU
transforms (same model, same optimiser and schedule, same number of steps), side by side in one run.

    python benchmarks/train_speed.py                 # CPU (3 steps) and CUDA when available (200 steps)
    python benchmarks/train_speed.py --full          # + the whole 4000-step ResNet-9 recipe on CUDA

Uses real CIFAR-10 when it is found in the data directories (CORRECTIVE_DATA_DIR), random CIFAR-shaped images
otherwise (the timing does not depend on pixel values).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from corrective_unlearning.data import DataNotFoundError, load_dataset
from corrective_unlearning.models import create_model
from corrective_unlearning.runtime import Runtime, Stopwatch
from corrective_unlearning.training import ImageBank, Recipe, train


def cifar_like() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        data = load_dataset("cifar10")
        return data.train_images, data.train_labels, "CIFAR-10"
    except DataNotFoundError:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return images, torch.randint(0, 10, (50000,), generator=generator), "random 32x32 images"


class PerSampleCIFAR(Dataset):
    """The conventional pipeline: crop, flip and normalise one image at a time on the CPU."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels = images, labels
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = F.pad(self.images[i], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        image = image[:, dy : dy + 32, dx : dx + 32]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.float() / 255 - self.mean) / self.std, self.labels[i]


def plain_loop(images, labels, recipe: Recipe, runtime: Runtime, workers: int) -> float:
    torch.manual_seed(0)
    model = runtime.prepare(create_model("resnet9", 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor)
    loader = DataLoader(PerSampleCIFAR(images, labels, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                        batch_size=recipe.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=runtime.cuda, persistent_workers=workers > 0)
    model.train()
    step = 0
    with Stopwatch(runtime) as clock:
        while step < recipe.steps:
            for x, y in loader:
                x, y = x.to(runtime.device, non_blocking=True), y.to(runtime.device, non_blocking=True)
                if runtime.cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with runtime.autocast():
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if step == recipe.steps:
                    break
    return clock.seconds


def ours(images, labels, recipe: Recipe, runtime: Runtime) -> float:
    torch.manual_seed(0)
    model = runtime.prepare(create_model("resnet9", 10))
    bank = ImageBank(images, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), runtime.device)
    log = train(model, bank, labels, torch.arange(len(labels)), recipe, seed=0, runtime=runtime)
    return log.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="steps per side-by-side timing on CUDA")
    parser.add_argument("--cpu-steps", type=int, default=3, help="steps per side-by-side timing on the CPU")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPU count, max 8)")
    parser.add_argument("--full", action="store_true", help="also time the full 4000-step recipe on CUDA")
    parser.add_argument("--devices", default="auto", help="comma list: cpu,cuda (default: cpu, plus cuda if any)")
    args = parser.parse_args()
    images, labels, source = cifar_like()
    devices = args.devices.split(",") if args.devices != "auto" else ["cpu"] + (["cuda"] * torch.cuda.is_available())
    workers = args.workers if args.workers is not None else min(8, torch.get_num_threads())
    rows = []
    for device in devices:
        runtime = Runtime.create(device, progress=False)
        steps = args.steps if runtime.cuda else args.cpu_steps
        recipe, warm = Recipe(steps=steps), Recipe(steps=min(20, steps))
        if runtime.cuda:  # warm-up: cuDNN autotuning and allocator growth stay out of the numbers
            ours(images, labels, warm, runtime)
        fast = ours(images, labels, recipe, runtime)
        plain = plain_loop(images, labels, recipe, runtime, workers)
        rows.append((device, f"{steps} steps", "this project (device-resident, batched aug)", fast, 1.0))
        rows.append((device, f"{steps} steps", f"plain DataLoader ({workers} workers, per-sample aug)",
                     plain, plain / fast))
        if runtime.cuda:
            compiled = Runtime.create(device, compile="reduce-overhead", progress=False)
            ours(images, labels, warm, compiled)  # compile once, outside the timing
            rows.append((device, f"{steps} steps", "this project + torch.compile (CUDA graphs)", ours(images, labels, recipe,
                                                                                             compiled), None))
            if args.full:
                full = Recipe()
                rows.append((device, "4000 steps", "this project, full ResNet-9 recipe A",
                             ours(images, labels, full, runtime), None))
                rows.append((device, "4000 steps", "this project + compile (CUDA graphs), full recipe A",
                             ours(images, labels, full, compiled), None))
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"\nResNet-9, batch 512, recipe A, data: {source}; GPU: {name}; CPU threads: {torch.get_num_threads()}")
    print(f"{'device':7s} {'work':11s} {'pipeline':52s} {'seconds':>9s} {'steps/s':>8s} {'vs ours':>8s}")
    for device, work, what, seconds, ratio in rows:
        steps = int(work.split()[0])
        ratio_text = f"{ratio:7.2f}x" if ratio is not None else ""
        print(f"{device:7s} {work:11s} {what:52s} {seconds:9.2f} {steps / seconds:8.1f} {ratio_text:>8s}")


if __name__ == "__main__":
    main()
