"""The ImageNet folder layout end to end on a set the test writes as JPEG files:
train/<class>/*.JPEG and val/<class>/*.JPEG through ImageFolder, the train and evaluation
transforms, a DataLoader with workers, class indices shared across splits, and a spiking
network trained for a few steps from the stream."""
import numpy as np
import pytest

pytest.importorskip("torchvision")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from brainsnn.errors import DatasetError  # noqa: E402
from brainsnn.io.imagefolder import (image_folder_dataset, image_folder_loader,  # noqa: E402
                                     loader_throughput)

CLASSES = ("n01440764", "n01443537", "n01484850")      # folder names as in ImageNet (wnids)
COLOURS = ((230, 30, 30), (30, 230, 30), (30, 30, 230))


def write_jpeg(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, quality=95)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """6 training images per class (a class colour plus noise, 40 x 48 px); validation: a
    black-left / white-right image for the first and last class only."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for c, (wnid, colour) in enumerate(zip(CLASSES, COLOURS)):
        for k in range(6):
            noise = rng.integers(-20, 21, size=(40, 48, 3))
            write_jpeg(root / "train" / wnid / f"{wnid}_{k}.JPEG",
                       np.clip(np.array(colour) + noise, 0, 255))
    halves = np.zeros((64, 64, 3))
    halves[:, 32:] = 255
    for wnid in (CLASSES[0], CLASSES[2]):
        write_jpeg(root / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG", halves)
    return root


def test_training_batches_are_crops_in_0_1_with_folder_labels(root):
    loader = image_folder_loader(root, "train", image_size=32, batch_size=6, workers=2)
    seen = []
    for x, y in loader:
        assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        # the dominant channel of each crop is its class colour
        assert torch.equal(x.mean((2, 3)).argmax(1), y)
        seen += y.tolist()
    assert sorted(seen) == [0] * 6 + [1] * 6 + [2] * 6          # 3 full batches of 6


def test_evaluation_is_resize_and_centre_crop_with_training_class_indices(root):
    ds = image_folder_dataset(root, "val", image_size=32)
    assert ds.classes == list(CLASSES)
    assert ds.targets == [0, 2]                                  # class 1 absent, indices kept
    x, _ = ds[0]
    # 64 px -> resized to round(32 / 0.875) = 37 px -> centre 32 px: the edge between black
    # and white stays in the middle (columns 15..16)
    assert x.shape == (3, 32, 32)
    assert float(x[:, :, :13].max()) < 0.05 and float(x[:, :, 19:].min()) > 0.95
    assert torch.equal(ds[0][0], x)                              # deterministic


def test_random_crops_and_order_follow_the_seed(root):
    def first(seed):
        return next(iter(image_folder_loader(root, "train", image_size=32, batch_size=6,
                                             workers=2, seed=seed)))
    a, b, c = first(1), first(1), first(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_bad_layouts_are_refused(tmp_path, root):
    with pytest.raises(DatasetError, match=r"no folder .*train.*laid out as"):
        image_folder_loader(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="holds no class folder"):
        image_folder_loader(tmp_path, "train")
    (tmp_path / "train" / "a").mkdir()
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(DatasetError, match="class folders that .* lacks: b"):
        image_folder_loader(tmp_path, "val")
    with pytest.raises(DatasetError, match="split must be one of train, val"):
        image_folder_loader(root, "test")


def test_a_spiking_network_trains_from_the_stream(root):
    from brainsnn.engine.network import Network, vgg_specs
    from brainsnn.learn.losses import make_loss

    torch.manual_seed(0)
    net = Network(vgg_specs((4, "P"), fc=(), n_classes=3), (3, 32, 32), T=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = make_loss("softmax")
    before = [p.detach().clone() for p in net.parameters()]
    loader = image_folder_loader(root, "train", image_size=32, batch_size=6, workers=0)
    losses = []
    for epoch in range(2):
        for x, y in loader:
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_loader_throughput_counts_the_timed_images(root):
    loader = image_folder_loader(root, "val", image_size=32, batch_size=1, workers=0)
    r = loader_throughput(loader, warmup=1)
    assert r["images"] == 1 and r["seconds"] > 0 and r["images_per_second"] > 0
