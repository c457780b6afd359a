"""AGDClassifier.fit / predict / score on a stream of (images, labels) batches (a DataLoader):
the steps of the array path when the batch order is the same, the sampler told the epoch,
exact resume, the ImageNet folder layout end to end, refused input, two processes under
torchrun with a DistributedSampler."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from brainsnn.engine.network import vgg_specs
from brainsnn.errors import TrainingError
from brainsnn.learn.agd import AGDClassifier
from brainsnn.learn.batches import check_distributed_sampler

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

torch.set_num_threads(1)
SEED, BATCH = 3, 40


class ArrayOrder:
    """Index batches in the order AGDClassifier draws for image arrays: epoch e takes the
    (e + 1)-th permutation of numpy's Generator seeded with the classifier's seed."""

    def __init__(self, n, batch_size, seed):
        self.n, self.batch_size, self.seed, self.epochs_told = n, batch_size, seed, []
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epochs_told.append(epoch)
        rng = np.random.default_rng(self.seed)
        for _ in range(epoch + 1):
            self.order = rng.permutation(self.n)

    def __iter__(self):
        return iter([self.order[i:i + self.batch_size].tolist()
                     for i in range(0, self.n, self.batch_size)])

    def __len__(self):
        return math.ceil(self.n / self.batch_size)


def classifier(**kw):
    kw = {"T": 3, "epochs": 3, "batch_size": BATCH, "lr": 3e-3, "seed": SEED,
          "augment": "crop_flip", **kw}
    return AGDClassifier(vgg_specs((4, "P"), fc=(16,), n_classes=2), **kw)


def tensors():
    x, y = ddp_worker.problem()
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def test_a_loader_in_the_array_order_takes_the_array_steps_exactly():
    x, y = ddp_worker.problem()
    arrays = classifier().fit(x, y)
    order = ArrayOrder(len(x), BATCH, SEED)
    streamed = classifier().fit(DataLoader(tensors(), batch_sampler=order))
    assert order.epochs_told[1:] == [0, 1, 2]                 # set_epoch before every pass
    for k, v in arrays.state_dict().items():
        assert torch.equal(streamed.state_dict()[k], v), k
    assert [h["train_loss"] for h in streamed.history_] == \
        [h["train_loss"] for h in arrays.history_]
    assert [h["steps"] for h in streamed.history_] == [8, 16, 24]
    # the equality is not that of two untouched networks
    assert arrays.history_[-1]["train_loss"] < arrays.history_[0]["train_loss"]
    # another order gives other parameters: the comparison can fail
    plain = classifier().fit(DataLoader(tensors(), batch_size=BATCH))
    assert any(not torch.equal(plain.state_dict()[k], v)
               for k, v in arrays.state_dict().items())


def test_predict_and_score_read_a_stream_as_they_read_arrays():
    x, y = ddp_worker.problem()
    clf = classifier(epochs=1).fit(x, y)
    loader = DataLoader(tensors(), batch_size=64)
    np.testing.assert_array_equal(clf.predict(loader), clf.predict(x))
    assert clf.score(loader) == clf.score(x, y)


def test_a_distributed_sampler_is_told_each_epoch():
    sampler = DistributedSampler(tensors(), num_replicas=1, rank=0, shuffle=True, seed=0)
    clf = classifier(epochs=2, augment=None).fit(DataLoader(tensors(), batch_size=BATCH,
                                                            sampler=sampler))
    assert sampler.epoch == 1 and len(clf.history_) == 2


def test_a_shuffled_loader_resumes_exactly(tmp_path):
    def loader():
        return DataLoader(tensors(), batch_size=BATCH, shuffle=True,
                          generator=torch.Generator().manual_seed(5))

    whole = classifier(epochs=2).fit(loader())

    class Killed(Exception):
        pass

    def kill(clf, record):
        raise Killed

    ckpt = tmp_path / "state.pt"
    with pytest.raises(Killed):
        classifier(epochs=2, checkpoint=ckpt).fit(loader(), callback=kill)
    resumed = classifier(epochs=2, checkpoint=ckpt).fit(loader())
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert [h["train_loss"] for h in resumed.history_] == \
        [h["train_loss"] for h in whole.history_]


def test_trains_from_an_imagenet_layout_folder(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image

    from brainsnn.io.imagefolder import image_folder_loader

    rng = np.random.default_rng(0)
    colours = ((220, 40, 40), (40, 40, 220))
    for split, n in (("train", 6), ("val", 3)):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            for k in range(n):
                path = tmp_path / split / wnid / f"{wnid}_{k}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(np.array(colours[c]) + rng.integers(-20, 21, (36, 44, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(path)
    train = image_folder_loader(tmp_path, "train", image_size=32, batch_size=4, workers=1)
    val = image_folder_loader(tmp_path, "val", image_size=32, batch_size=4, workers=0)
    clf = AGDClassifier(vgg_specs((4, "P"), fc=(), n_classes=2), T=2, epochs=2, lr=1e-2,
                        seed=0).fit(train, X_val=val)
    assert [h["steps"] for h in clf.history_] == [3, 6]       # 12 images, batch 4, drop_last
    assert [h["images"] for h in clf.history_] == [12, 12]
    assert all(np.isfinite(h["train_loss"]) for h in clf.history_)
    predicted = clf.predict(val)
    labels = np.concatenate([y.numpy() for _, y in val])
    assert predicted.shape == (6,) and set(predicted) <= {0, 1}
    assert clf.score(val) == pytest.approx(np.mean(predicted == labels))
    assert clf.history_[-1]["val_acc"] == clf.score(val)


def test_bad_streams_are_refused():
    data = tensors()
    with pytest.raises(TrainingError, match="y must be None when X is a stream"):
        classifier().fit(DataLoader(data, batch_size=BATCH), data.tensors[1].numpy())
    with pytest.raises(TrainingError, match="give the labels y"):
        classifier().fit(data.tensors[0].numpy())
    x, y = data.tensors
    wrong = [(x[:40], y[:40]), (x[40:80, :, :4], y[40:80])]
    with pytest.raises(TrainingError, match=r"batch 1 of X: images of shape \(40, 1, 4, 8\), "
                                            r"expected \(batch >= 1, 1, 8, 8\)"):
        classifier(epochs=1).fit(Batches(wrong))
    with pytest.raises(TrainingError, match="batch 0 of the stream is a Tensor"):
        classifier(epochs=1).fit(Batches([x[:40]]))
    with pytest.raises(TrainingError, match=r"labels hold values in \[0, 7\], expected class "
                                            r"indices 0..1"):
        classifier(epochs=1).fit(Batches([(x[:40], y[:40]), (x[:40], y[:40] * 7)]))
    with pytest.raises(TrainingError, match=r"batch 0 images.*\[0, 1\]"):
        classifier(epochs=1).fit(Batches([(x[:40] * 3, y[:40])]))
    with pytest.raises(TrainingError, match="one-pass iterator of batches cannot serve 3"):
        classifier().fit(iter([(x[:40], y[:40])]))
    with pytest.raises(TrainingError, match="has no length"):
        classifier().fit(Unsized([(x[:40], y[:40])]))
    clf = classifier(epochs=1).fit(Batches([(x[:40], y[:40])]))
    with pytest.raises(TrainingError, match="y must be None"):
        clf.score(Batches([(x[:40], y[:40])]), y[:40])


def test_several_processes_need_a_distributed_sampler():
    data = tensors()
    with pytest.raises(TrainingError, match="2 processes .* RandomSampler.*DistributedSampler"):
        check_distributed_sampler(DataLoader(data, batch_size=8, shuffle=True), 2)
    check_distributed_sampler(DataLoader(data, batch_size=8, sampler=DistributedSampler(
        data, num_replicas=2, rank=0)), 2)
    check_distributed_sampler(DataLoader(data, batch_size=8, shuffle=True), 1)


class Unsized:
    """A re-iterable of batches without a length."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


class Batches(Unsized):
    def __len__(self):
        return len(self.batches)


@pytest.mark.slow
def test_two_processes_with_a_distributed_sampler_take_the_steps_of_one(tmp_path):
    from test_distributed import _close, torchrun

    single = ddp_worker.train("stream")
    _, out = torchrun(tmp_path, "--kind", "stream")
    result = torch.load(out, weights_only=False)
    assert result["world_size"] == 2
    _close(result["state"], single.state_dict())
    assert single.history_[-1]["train_loss"] < single.history_[0]["train_loss"]
    assert [h["images"] for h in result["history"]] == [320] * 3
