"""Data: the fixed MNIST split, the Pillow folder loader on generated images, augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from tokensift.errors import DatasetError
from tokensift.sw.data import (
    ImageFolder,
    load_image_folder,
    load_mnist,
    random_affine,
    spread_indices,
    spread_subset,
)


def test_mnist_split_is_fixed_stratified_and_disjoint():
    train, test = load_mnist()
    assert len(train) == 4000 and len(test) == 1000
    assert test.tensors[1].bincount().tolist() == [100] * 10
    assert train.tensors[0].shape[1:] == (1, 28, 28)
    again_train, again_test = load_mnist()
    assert torch.equal(test.tensors[0], again_test.tensors[0])
    flat_train = {tuple(r) for r in train.tensors[0].flatten(1)[:, ::7].tolist()}
    overlap = sum(tuple(r) in flat_train for r in test.tensors[0].flatten(1)[:, ::7].tolist())
    assert overlap <= 2  # different images (tiny chance of identical subsampled digits)
    assert abs(float(train.tensors[0].mean())) < 0.05  # normalised


def test_calibration_subsets_cover_every_class_of_the_sorted_split():
    train, _ = load_mnist()
    labels = train.tensors[1]
    assert labels[:256].unique().tolist() == [0]  # why calibration must not take the first images
    sub = spread_subset(train, 256)
    assert len(sub) == 256 and len(set(sub.indices)) == 256
    counts = labels[list(sub.indices)].bincount(minlength=10)
    assert counts.min() >= 20  # every digit, about a tenth each
    assert len(spread_subset(train, 10_000)) == len(train)
    assert spread_indices(1000, 4) == [0, 333, 666, 999] and spread_indices(3, 10) == [0, 1, 2]
    assert spread_indices(5, 0) == []


def _write_folder(root, classes, per_class, size=(12, 10), mode="RGB"):
    rng = np.random.RandomState(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            arr = np.full(shape, 40 * ci, dtype=np.uint8) + rng.randint(0, 10, shape).astype(np.uint8)
            Image.fromarray(arr, mode).save(root / c / f"img{i}.png")
    (root / classes[0] / "notes.txt").write_text("ignored")


def test_image_folder_loads_resizes_and_labels(tmp_path):
    _write_folder(tmp_path, ["cat", "ant", "bee"], 3)
    ds = ImageFolder(tmp_path, img_size=16, in_chans=3)
    assert ds.classes == ["ant", "bee", "cat"] and len(ds) == 9
    x, label = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and label == 0
    # class brightness is 40 * (index in the writing order): cat (written first) is darkest
    means = {ds.classes[lbl]: float(img.mean()) for img, lbl in (ds[i] for i in range(len(ds)))}
    assert means["cat"] < means["ant"] < means["bee"]
    grey = ImageFolder(tmp_path, img_size=8, in_chans=1)
    assert grey[4][0].shape == (1, 8, 8)


def test_train_val_folders_and_seeded_split(tmp_path):
    _write_folder(tmp_path / "a" / "train", ["x", "y"], 4)
    _write_folder(tmp_path / "a" / "val", ["x", "y"], 2)
    train, val = load_image_folder(tmp_path / "a", img_size=8)
    assert (len(train), len(val)) == (8, 4)
    _write_folder(tmp_path / "b", ["x", "y"], 5)
    t1, v1 = load_image_folder(tmp_path / "b", img_size=8)
    t2, v2 = load_image_folder(tmp_path / "b", img_size=8)
    assert (len(t1), len(v1)) == (8, 2) and t1.indices == t2.indices
    assert not set(t1.indices) & set(v1.indices)


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"^dataset folder '.*missing' does not exist$"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"^dataset folder '.*empty' has no class sub-folders$"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "noimg" / "c").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"^dataset folder '.*noimg' has no images in its class "
                                           r"sub-folders$"):
        ImageFolder(tmp_path / "noimg")
    with pytest.raises(ValueError, match=r"^in_chans must be 1 or 3, not 2$"):
        ImageFolder(tmp_path / "noimg", in_chans=2)


def test_random_affine_keeps_shape_and_background_and_is_seeded():
    train, _ = load_mnist()
    x = train.tensors[0][:16]
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert torch.allclose(a[:, :, 0, 0], x.amin(dim=(1, 2, 3))[:, None])  # corners stay background
