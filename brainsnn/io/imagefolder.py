"""ImageNet-style image folders (``ROOT/train/<class>/*.JPEG``, ``ROOT/val/<class>/*.JPEG``)
streamed through torchvision's ``ImageFolder`` and a ``DataLoader`` with worker processes.

Images are never loaded into memory as a whole: the workers decode and transform each batch.
Batches are ``(images, labels)``: images ``float32`` ``(batch, 3, size, size)`` in [0, 1] (the
range of every brainsnn loader; no mean/std normalisation), labels ``int64``. The transforms
are the usual ImageNet ones: training ``RandomResizedCrop(size)`` and a horizontal flip;
evaluation ``Resize(size / 0.875)`` (256 for 224) and ``CenterCrop(size)``. The class index
of a folder is its place among the sorted class folders of ``ROOT/train``, for every split
(a validation folder that lacks a class keeps the training indices).

Needs torchvision (``pip install "brainsnn[imagenet]"``, a wheel built for the installed torch).
"""
from __future__ import annotations

import time
from pathlib import Path

from brainsnn.errors import DatasetError

__all__ = ["SPLITS", "EVAL_CROP_FRACTION", "image_folder_transform", "image_folder_dataset",
           "image_folder_loader", "loader_throughput"]

SPLITS = ("train", "val")
#: evaluation resizes to size / 0.875 (224 -> 256), then crops the centre
EVAL_CROP_FRACTION = 0.875
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def _torchvision():
    try:
        import torchvision
    except ImportError:
        raise ImportError("the image-folder loader needs torchvision: pip install "
                          "'brainsnn[imagenet]' (the torchvision wheel built for your torch)") \
            from None
    return torchvision


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def image_folder_transform(split: str, image_size: int = 224):
    """The torchvision transform of ``split``: random-resized crop and flip for ``train``,
    resize to ``image_size / 0.875`` and centre crop for ``val``; then a [0, 1] tensor."""
    T = _torchvision().transforms
    _check_split(split)
    if not isinstance(image_size, int) or image_size < 8:
        raise DatasetError(f"image_size must be an integer >= 8 (pixels), got {image_size!r}")
    if split == "train":
        return T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(),
                          T.ToTensor()])
    return T.Compose([T.Resize(round(image_size / EVAL_CROP_FRACTION)),
                      T.CenterCrop(image_size), T.ToTensor()])


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def image_folder_dataset(root, split: str = "train", image_size: int = 224):
    """torchvision ``ImageFolder`` of ``root/split`` with :func:`image_folder_transform`;
    class indices from the class folders of ``root/train`` (else of ``root/split``)."""
    datasets = _torchvision().datasets
    root = Path(root).expanduser()
    folder = root / _check_split(split)
    layout = f"{root}/{{train,val}}/<class>/*.JPEG"
    if not folder.is_dir():
        raise DatasetError(f"no folder {folder}: an image-folder dataset is laid out as {layout}")
    reference = root / "train" if (root / "train").is_dir() else folder
    classes = _class_folders(reference)
    if not classes:
        raise DatasetError(f"{reference} holds no class folder; expected {layout}")
    unknown = sorted(set(_class_folders(folder)) - set(classes))
    if unknown:
        raise DatasetError(f"{folder} has class folders that {reference} lacks: "
                           f"{', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    try:
        ds = datasets.ImageFolder(str(folder), transform=image_folder_transform(split, image_size),
                                  is_valid_file=lambda p: p.lower().endswith(IMAGE_SUFFIXES))
    except FileNotFoundError as exc:
        raise DatasetError(f"{folder}: {exc}; expected {layout}") from None
    remap = [index[c] for c in ds.classes]        # indices of ROOT/train's classes
    ds.samples = ds.imgs = [(path, remap[k]) for path, k in ds.samples]
    ds.targets = [k for _, k in ds.samples]
    ds.classes, ds.class_to_idx = classes, index
    return ds


def image_folder_loader(root, split: str = "train", image_size: int = 224,
                        batch_size: int = 256, workers: int = 4, shuffle: bool | None = None,
                        seed: int = 0, drop_last: bool | None = None, pin_memory: bool = False):
    """A ``DataLoader`` over ``root/split`` (see the module docstring), ``workers`` decoding
    processes (0: in this process). ``shuffle`` and ``drop_last`` default to True for
    ``train``; the order and the random crops follow ``seed``."""
    import torch

    ds = image_folder_dataset(root, split, image_size)
    if batch_size < 1 or workers < 0:
        raise DatasetError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and "
                           f"{workers}")
    train = split == "train"
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=train if shuffle is None else shuffle,
        num_workers=workers, drop_last=train if drop_last is None else drop_last,
        pin_memory=pin_memory, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))   # workers' crops follow it too


def loader_throughput(loader, batches: int | None = None, warmup: int = 1) -> dict:
    """Images per second of iterating ``loader`` (decode, transform, collate), after
    ``warmup`` batches (worker start-up); ``batches`` limits the batches timed.
    Returns ``{"images_per_second", "images", "seconds"}``."""
    it = iter(loader)
    for _ in range(warmup):
        next(it, None)
    images, t0 = 0, time.perf_counter()
    for k, (x, _) in enumerate(it):
        images += len(x)
        if batches is not None and k + 1 >= batches:
            break
    seconds = time.perf_counter() - t0
    return {"images_per_second": images / max(seconds, 1e-9), "images": images,
            "seconds": seconds}
