"""One data-parallel training, started by the distributed tests under ``torchrun``.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT [--kind
spiking|ann|stream] [--checkpoint PATH] [--exit-after EPOCH]. Rank 0 writes the trained parameters
to OUT (torch.save); --exit-after ends every process abruptly (os._exit) after that epoch.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from brainsnn.learn import distributed as ddp  # noqa: E402


def problem(n=320):
    """A two-class problem: images (n, 1, 8, 8) with a brighter top or bottom half."""
    rng = np.random.default_rng(7)
    x = rng.random((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, n)
    x[y == 0, :, :4] *= 0.5
    x[y == 1, :, 4:] *= 0.5
    return x, y


def train(kind="spiking", epochs=3, checkpoint=None, callback=None):
    """The classifier both the single-process reference and the workers train."""
    from brainsnn.engine.network import Network, vgg_specs
    from brainsnn.learn.agd import AGDClassifier
    from brainsnn.learn.conversion import train_ann

    x, y = problem()
    torch.manual_seed(0)
    if kind == "ann":
        ann = Network(vgg_specs((4, "P"), fc=(16,), n_classes=2, kinds="artificial"), (1, 8, 8),
                      T=1)
        clf = train_ann(ann, x, y, epochs=epochs, batch_size=40, lr=3e-3, seed=3, augment=None)
        return clf
    if kind == "stream":   # a DataLoader whose DistributedSampler shares each global batch
        return _stream_classifier(epochs, checkpoint).fit(_stream(x, y), callback=callback)
    clf = AGDClassifier(vgg_specs((4, "P"), fc=(16,), n_classes=2), T=3, epochs=epochs,
                        batch_size=40, lr=3e-3, seed=3, augment="crop_flip",
                        checkpoint=checkpoint)
    return clf.fit(x, y, callback=callback)


def _stream(x, y, global_batch=40):
    """Batches of ``global_batch / W`` images per process, in order: rank r takes images
    r, r + W, ... of the data, so the W processes' batch k is the single process's batch k."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    sampler = DistributedSampler(data, num_replicas=ddp.world_size(), rank=ddp.rank(),
                                 shuffle=False)
    return DataLoader(data, batch_size=global_batch // ddp.world_size(), sampler=sampler)


def _stream_classifier(epochs, checkpoint):
    from brainsnn.engine.network import vgg_specs
    from brainsnn.learn.agd import AGDClassifier

    return AGDClassifier(vgg_specs((4, "P"), fc=(16,), n_classes=2), T=3, epochs=epochs,
                         lr=3e-3, seed=3, checkpoint=checkpoint)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--kind", default="spiking")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--exit-after", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    ddp.init_from_env("cpu")

    def callback(clf, record):
        if args.exit_after is not None and record["epoch"] == args.exit_after:
            os._exit(3)  # as if killed: no clean-up, no further writes

    clf = train(args.kind, checkpoint=args.checkpoint, callback=callback)
    if ddp.is_main():
        torch.save({"state": clf.state_dict(), "history": clf.history_,
                    "world_size": ddp.world_size()}, args.out)


if __name__ == "__main__":
    main()
