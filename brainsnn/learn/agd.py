"""Trainable stages with a scikit-learn-like interface: ``fit`` / ``predict`` / ``score``.

:class:`AGDClassifier` trains a :class:`brainsnn.engine.network.Network` (spiking, artificial or
hybrid) by approximate gradient descent, as defined in this project: backpropagation through
the T time steps with the spike's surrogate derivative (the torch engine's neurons), Adam,
a cosine learning-rate schedule, softmax cross-entropy or stochmax at the output.

Example::

    from brainsnn.engine.network import vgg_specs
    from brainsnn.learn.agd import AGDClassifier
    clf = AGDClassifier(vgg_specs((16, "P", 32, "P"), fc=(128,)), T=4, epochs=2, seed=0)
    clf.fit(x_train, y_train)            # images (n, 28, 28) in [0, 1], labels int64 (n,)
    clf.score(x_test, y_test)            # accuracy in [0, 1]
    clf.accuracy_vs_T(x_test, y_test, [1, 2, 4, 8])

Every random number (weight init, batch order, Poisson input, stochmax noise, augmentation)
comes from ``seed`` (torch, numpy and brian2 seeds are set by :meth:`fit`).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from brainsnn.learn import batches as stream_batches
from brainsnn.learn import distributed as ddp
from brainsnn.learn.losses import make_loss
from brainsnn.models import LIF
from brainsnn.engine.network import Network, NetworkError, attach_batchnorm, fold_batchnorm
from brainsnn.engine.encoding import make_encoder
from brainsnn.errors import TrainingError  # noqa: F401
from brainsnn.seeding import seed_everything
from brainsnn.params import Params
from brainsnn.validation import check_labels, check_T, positive_int, validate_images

__all__ = ["AGDClassifier", "TrainingError", "augment_crop_flip",
           "augment_cutout", "AUGMENTATIONS"]

# data augmentations of the training images (AGDClassifier ``augment``)
AUGMENTATIONS = (None, "crop_flip", "crop_flip_cutout", "shift")




def _to_device(t, device):
    """A CPU tensor on ``device``; to a GPU pinned and asynchronous, since a plain copy would
    make the host wait for the GPU's queue at every batch."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def augment_crop_flip(x, pad=4, generator=None, flip=True):
    """Random translation by up to ``pad`` pixels (zero padding) and, with ``flip``,
    horizontal flip of half the images.

    ``x`` is (n, C, H, W) on any device; the random draws come from ``generator`` (CPU).
    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dx = _to_device(torch.randint(0, 2 * pad + 1, (n,), generator=generator), x.device)
    dy = _to_device(torch.randint(0, 2 * pad + 1, (n,), generator=generator), x.device)
    cols = torch.arange(w, device=x.device)[None, :].expand(n, w)
    if flip:
        mirrored = _to_device(torch.rand(n, generator=generator) < 0.5, x.device)
        cols = torch.where(mirrored[:, None], w - 1 - cols, cols)
    cols = cols + dx[:, None]
    rows = torch.arange(h, device=x.device)[None, :] + dy[:, None]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def augment_cutout(x, size=16, generator=None):
    """Cutout (DeVries & Taylor 2017): set a ``size`` x ``size`` square of every image to 0.

    The square's centre is uniform over the image, so near a border only part of it falls
    inside. 0 is "no input" for the direct encoder. ``x`` is (n, C, H, W) on any device; the
    random draws come from ``generator`` (CPU).
    """
    n, _, h, w = x.shape
    cy = _to_device(torch.randint(0, h, (n,), generator=generator), x.device)
    cx = _to_device(torch.randint(0, w, (n,), generator=generator), x.device)
    rows = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - size // 2)
    cols = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - size // 2)
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return x * ~inside[:, None]


def _as_images(X, name="X"):
    """Images (n, ...) with finite values in [0, 1], as float32."""
    return validate_images(X, name=name, error=TrainingError).astype(np.float32, copy=False)


class AGDClassifier(Params):
    """Approximate-gradient-descent classifier on a spiking / hybrid network.

    Parameters
    ----------
    specs : list of layer specs (see :mod:`brainsnn.engine.network`), or None with ``network``
    network : Network, optional
        A ready network (its T, neuron, readout and encoder are used).
    T : int
        Time steps per image in training (>= 1).
    neuron : NeuronModel
        Neuron of the spiking layers (default LIF, tau_m = 20 ms, theta = 1, dt = 1 ms).
    encoder : {'direct', 'poisson'}
        Input coding (direct: analog image as constant current; poisson: Bernoulli spikes).
    readout : {'membrane', 'rate'}
    loss : {'softmax', 'stochmax'} or nn.Module;  loss_options : dict for StochMax
    epochs, batch_size, lr, weight_decay
        Cosine learning-rate decay over all steps.
    optimizer : {'adam', 'sgd'}
        Adam (default), or SGD with Nesterov momentum 0.9 and a linear warm-up of the learning
        rate over the first 2 % of the steps (for deep networks with batch-norm).
    batchnorm : bool
        Train with batch-norm after every weighted layer but the readout (in a spiking layer
        it normalises the input current over batch and time steps) and fold it into the
        weights and biases at the end of :meth:`fit`
        (:func:`brainsnn.engine.network.fold_batchnorm`), so the trained network is a plain
        network of the same equations with a constant bias current.
    augment : None, 'crop_flip', 'crop_flip_cutout' or 'shift'
        Data augmentation (CIFAR-10): random translation by up to 4 pixels and horizontal
        flip (:func:`augment_crop_flip`), then optionally a 16 x 16 square cut out
        (:func:`augment_cutout`); 'shift': translation by up to 2 pixels, no flip (for
        inputs such as feature maps of learned kernels, whose mirror image is not the
        maps of the mirrored scene).
    max_minutes : float, optional
        Training time budget; training stops after the batch that exceeds it.
    device : str
        torch device ('cpu', 'cuda').
    seed : int
    verbose : bool or int
        Print progress (an int: every that many batches).
    init_rate : float, optional
        Before training, scale each spiking layer's initial weights so that it fires at about
        this rate (spikes per neuron per step) on 256 training images
        (:meth:`brainsnn.engine.network.Network.calibrate_rates`); useful for deep networks.
    checkpoint : str or path, optional
        A state file written after every epoch (network, optimizer, schedule, every random
        number generator, epoch, history); when it exists at the start of :meth:`fit`, training
        resumes from it and ends with the parameters of an uninterrupted run.

    Data-parallel training: started by ``torchrun`` with an initialised process group
    (:func:`brainsnn.learn.distributed.init_from_env`), :meth:`fit` wraps the network in
    ``DistributedDataParallel`` and every process trains on its share of each global batch of
    ``batch_size`` images (:mod:`brainsnn.learn.distributed`); the parameters after each step
    are those of one process with the same seed and batch size, up to the rounding of the
    gradient sum, for softmax training on direct-coded input without batch-norm (batch-norm
    normalises per process, Poisson input and stochmax noise are drawn per process). Only
    rank 0 writes the checkpoint.

    Attributes after :meth:`fit`
    ----------------------------
    network_ : Network
        The trained network (``network`` itself when one was given, trained in place; a new
        network after batch-norm folding).
    classes_ : int array
        The class indices ``0 .. n_outputs - 1`` (labels must lie among them).
    history_ : list of dict
        One record per epoch (loss, accuracies, seconds, images, steps).
    train_seconds_ : float;  stopped_early_ : bool (the time budget ended training)
    """

    def __init__(self, specs=None, network=None, T=4, neuron=LIF, encoder="direct",
                 readout="membrane", surrogate="triangle", alpha=1.0, loss="softmax",
                 loss_options=None, epochs=3, batch_size=64, lr=1e-3, weight_decay=0.0,
                 augment=None, max_minutes=None, device="cpu", seed=0, verbose=False,
                 eval_batch_size=256, init_rate=None, optimizer="adam", batchnorm=False,
                 checkpoint=None):
        self.specs, self.network = specs, network
        self.T = T
        self.neuron, self.encoder, self.readout = neuron, encoder, readout
        self.surrogate, self.alpha = surrogate, alpha
        self.loss, self.loss_options = loss, loss_options
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.weight_decay, self.augment, self.max_minutes = weight_decay, augment, max_minutes
        self.device, self.seed, self.verbose = device, seed, verbose
        self.eval_batch_size = eval_batch_size
        self.init_rate = init_rate
        self.optimizer, self.batchnorm = optimizer, batchnorm
        self.checkpoint = checkpoint

    def _check_params(self):
        if self.specs is None and self.network is None:
            raise TrainingError("give layer specs or a ready network")
        self._train_T()
        positive_int(self.epochs, "epochs", TrainingError)
        positive_int(self.batch_size, "batch_size", TrainingError)
        positive_int(self.eval_batch_size, "eval_batch_size", TrainingError)
        if not float(self.lr) > 0:
            raise TrainingError(f"lr must be > 0, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise TrainingError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.augment not in AUGMENTATIONS:
            raise TrainingError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")

    def _train_T(self):
        """Time steps per image in training: the given network's, else ``T``."""
        return check_T(self.network.T if self.network is not None else self.T,
                       error=TrainingError)

    def _device(self):
        return ddp.local_device(self.device)

    def _build(self, input_shape):
        net = self.network
        if net is None:
            net = Network(self.specs, input_shape, T=self._train_T(), neuron=self.neuron,
                          surrogate=self.surrogate, alpha=self.alpha,
                          readout=self.readout, encoder=make_encoder(self.encoder))
        if self.batchnorm:
            attach_batchnorm(net)
        return net.to(self._device())

    def _fitted(self):
        if not hasattr(self, "network_"):
            raise TrainingError("call fit() first (no trained network yet)")
        return self.network_

    def _log(self, msg):
        if self.verbose:
            print(msg, flush=True)

    def fit(self, X, y=None, X_val=None, y_val=None, callback=None):
        """Train on images ``X`` (n, ...) in [0, 1] and labels ``y`` (n,); returns self.

        ``X`` may instead be a stream of batches (``y`` None): a ``torch.utils.data.DataLoader``
        (e.g. :func:`brainsnn.io.imagefolder.image_folder_loader`) or another re-iterable with
        a length, yielding ``(images, labels)`` pairs (:mod:`brainsnn.learn.batches`). Each
        epoch iterates it once and takes one optimiser step per batch (``batch_size`` is
        then the loader's; the loss, optimiser, schedule over ``epochs x len(X)`` steps,
        augmentation, callback and history are those of arrays). A sampler with
        ``set_epoch`` (``DistributedSampler``) is told the epoch before each pass; under
        ``torchrun`` the DataLoader must have one, so that each process trains on its share
        (the batch is then per process). The first batch is checked in full, later ones for
        shape and labels. A checkpoint holds the loader's generator, so that a resumed run
        draws the same order (and, for workers that are not persistent, the same crops).

        ``X_val``/``y_val`` (optional, never the test set when choosing hyperparameters) are
        scored after every epoch into :attr:`history`; ``X_val`` may be a stream too (then
        ``y_val`` None). ``callback(self, epoch_record)`` is called after every epoch (e.g. to
        checkpoint).
        """
        self._check_params()
        epochs, batch_size = int(self.epochs), int(self.batch_size)
        stream = stream_batches.is_batch_stream(X)
        if stream:
            if y is not None:
                raise TrainingError("y must be None when X is a stream of (images, labels) "
                                    "batches: the labels come with the batches")
            stream_batches.check_distributed_sampler(X, ddp.world_size())
            n_batches = stream_batches.batches_per_epoch(X, epochs)
            first = stream_batches.first_batch(X)
            input_shape = image_shape = tuple(first[0].shape[1:])
        else:
            if y is None:
                raise TrainingError("give the labels y of the images X (or, as X alone, a "
                                    "DataLoader of (images, labels) batches)")
            X = _as_images(X)
            input_shape = X.shape[1:]
            n_batches = math.ceil(len(X) / batch_size)
        rng = seed_everything(self.seed)
        if len(input_shape) == 2:
            input_shape = (1, *input_shape)
        device = self._device()
        self.network_ = net = self._build(input_shape)
        self.classes_ = np.arange(int(np.prod(net.output_shape)))
        world = ddp.world_size()
        if not stream:
            y = check_labels(y, len(X), len(self.classes_), name="y", error=TrainingError)
        if X_val is not None and not stream_batches.is_batch_stream(X_val):
            X_val = _as_images(X_val, "X_val")
            y_val = check_labels(y_val, len(X_val), len(self.classes_), name="y_val",
                                 error=TrainingError)
        self.loss_fn_ = make_loss(self.loss, **dict(self.loss_options or {})).to(device)
        lr, weight_decay = float(self.lr), float(self.weight_decay)
        if self.optimizer == "sgd":
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                  weight_decay=weight_decay)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        # cosine decay over the planned steps; with a time budget the plan shrinks after each
        # epoch to the epochs that fit, so that the schedule still ends at a small rate
        plan = {"epochs": epochs, "total": n_batches * epochs}
        warmup = max(1, n_batches * epochs // 50) if self.optimizer == "sgd" else 0
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: min(1.0, (k + 1) / warmup if warmup else 1.0) * 0.5
            * (1 + math.cos(math.pi * min(k, plan["total"]) / plan["total"])))
        gen = torch.Generator().manual_seed(self.seed)
        if stream:
            def batches(epoch):
                sampler = stream_batches.epoch_sampler(X)
                if sampler is not None:
                    sampler.set_epoch(epoch)
                for k, batch in enumerate(X):
                    yield stream_batches.checked_batch(batch, k, image_shape,
                                                       len(self.classes_))
        else:
            Xd = torch.from_numpy(X if X.ndim == 4 else X[:, None] if X.ndim == 3 else X)
            yd = torch.from_numpy(y)
            if device.type != "cpu":  # the whole training set on the GPU once
                Xd, yd = Xd.to(device), yd.to(device)

            def batches(epoch):
                order = torch.from_numpy(rng.permutation(len(X))).to(Xd.device)
                for b in range(n_batches):
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    yield Xd[idx], yd[idx]
        loader_gen = stream_batches.loader_generator(X) if stream else None
        self.history_, self.stopped_early_ = [], False
        step, ref, epoch, done_seconds = 0, (0, 0.0), 0, 0.0
        resumed = self._resume(net, opt, sched, rng, gen, plan, loader_gen)
        if resumed is not None:
            step, epoch, done_seconds = resumed
        elif self.init_rate:
            if stream:
                sample = first[0][:256]
            else:
                sample = Xd[torch.from_numpy(rng.permutation(len(X))[:256]).to(Xd.device)]
            rates = net.calibrate_rates(sample.to(device), target_rate=self.init_rate)
            self._log("initial spike rates: " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()))
        model = net
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        start = time.perf_counter() - done_seconds
        verbose_every = self.verbose if isinstance(self.verbose, int) and self.verbose > 1 \
            else max(1, n_batches // 10)
        while epoch < plan["epochs"]:
            net.train()
            self.loss_fn_.train()
            # running sums stay on the device: reading them every step would make the host
            # wait for the GPU after each batch
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            t_epoch = time.perf_counter()
            for b, (xb, yb) in enumerate(batches(epoch)):
                if self.augment == "shift":
                    xb = augment_crop_flip(xb, pad=2, generator=gen, flip=False)
                elif self.augment:
                    xb = augment_crop_flip(xb, generator=gen)
                if self.augment == "crop_flip_cutout":
                    xb = augment_cutout(xb, generator=gen)
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
                split = world > 1 and not stream   # a stream is shared by its sampler
                if split:
                    xb, yb, weight = self._share(xb, yb)
                z = model(xb)
                loss = self.loss_fn_(z, yb)
                opt.zero_grad(set_to_none=True)
                if split:
                    # DDP averages gradients over processes: weigh each share so that the
                    # average is the gradient of the mean loss over the global batch
                    (loss * weight).backward()
                    if not weight:  # a stand-in image is not counted
                        z, yb = z[:0], yb[:0]
                else:
                    loss.backward()
                opt.step()
                sched.step()
                step += 1
                loss_sum += loss.detach().double() * len(yb)
                correct += (z.detach().argmax(1) == yb).sum()
                seen += len(yb)
                if self.verbose and (b + 1) % verbose_every == 0:
                    el = time.perf_counter() - start
                    self._log(f"  epoch {epoch + 1}/{plan['epochs']} batch {b + 1}/{n_batches} "
                              f"loss {float(loss_sum) / seen:.4f} train acc "
                              f"{int(correct) / seen:.4f} "
                              f"({seen / (time.perf_counter() - t_epoch):.1f} img/s, {el:.0f} s)")
                if self.max_minutes:
                    elapsed = ddp.broadcast_from_main([time.perf_counter() - start], device)[0]
                    if elapsed > 60 * self.max_minutes or step >= plan["total"]:
                        # out of time, or at the end of a schedule shortened to the budget
                        self.stopped_early_ = step < n_batches * epochs
                        break
                    if step == 20:  # speed is measured after these (CUDA/cuDNN warm-up)
                        ref = (step, elapsed)
                    elif step % 20 == 0 and step > 20:
                        # steps that fit in the budget at the measured speed: the cosine
                        # schedule is set to end (at a small rate) when the budget does
                        rate = (step - ref[0]) / max(elapsed - ref[1], 1e-9)
                        fit = step + int(rate * (60 * self.max_minutes - elapsed))
                        plan["total"] = max(step + 1, min(n_batches * epochs, fit))
                        plan["epochs"] = math.ceil(plan["total"] / n_batches)
            epoch += 1
            loss_total, correct, seen = ddp.sum_over_processes([loss_sum, correct, seen], device)
            rec = {"epoch": epoch, "train_loss": loss_total / seen,
                   "train_acc": int(correct) / seen,
                   "seconds": time.perf_counter() - start, "images": seen, "steps": step}
            if X_val is not None:
                rec["val_acc"] = self.score(X_val, y_val)
            self.history_.append(rec)
            self._save_checkpoint(net, opt, sched, rng, gen, plan, step, epoch, rec["seconds"],
                                  loader_gen)
            self._log(f"epoch {epoch}: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
            if callback is not None:
                callback(self, rec)
            if self.stopped_early_:
                self._log(f"time budget of {self.max_minutes} min: stopped after {step} of "
                          f"{n_batches * epochs} planned steps (schedule shortened)")
                break
            if step >= plan["total"]:
                break
        self.train_seconds_ = time.perf_counter() - start
        if self.batchnorm:
            self.network_ = net = fold_batchnorm(net)
        net.eval()
        return self

    def _share(self, xb, yb):
        """This process's images of a global batch and the weight of its mean loss."""
        n = len(yb)
        xs, ys = ddp.share(xb), ddp.share(yb)
        if len(ys) == 0:  # fewer images than processes: run one, weigh it 0
            return xb[:1], yb[:1], 0.0
        return xs, ys, len(ys) * ddp.world_size() / n

    # -- checkpoints ---------------------------------------------------------------------------
    #: settings a checkpoint must share with the run that resumes it
    _RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "seed", "T",
                    "augment", "loss", "batchnorm", "max_minutes")

    def _resume_settings(self):
        return {k: (None if getattr(self, k) is None else str(getattr(self, k)))
                for k in self._RESUME_KEYS}

    def _save_checkpoint(self, net, opt, sched, rng, gen, plan, step, epoch, seconds,
                         loader_gen=None):
        if self.checkpoint is None:
            return
        if ddp.is_main():
            state = {"settings": self._resume_settings(), "epoch": epoch, "step": step,
                     "seconds": seconds, "plan": dict(plan), "history": list(self.history_),
                     "stopped_early": self.stopped_early_,
                     "network": net.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "numpy_rng": rng.bit_generator.state,
                     "augment_rng": gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "loader_rng": None if loader_gen is None else loader_gen.get_state(),
                     "cuda_rng": (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                                  else None)}
            path = os.fspath(self.checkpoint)
            torch.save(state, path + ".tmp")
            os.replace(path + ".tmp", path)   # atomic: a kill leaves the previous epoch's file
        ddp.barrier()

    def _resume(self, net, opt, sched, rng, gen, plan, loader_gen=None):
        """Restore a checkpoint into the fresh training state; (step, epoch, seconds) or None."""
        if self.checkpoint is None or not os.path.exists(self.checkpoint):
            return None
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        if state["settings"] != self._resume_settings():
            changed = sorted(k for k in state["settings"]
                             if state["settings"][k] != self._resume_settings()[k])
            raise TrainingError(f"checkpoint {self.checkpoint} was written with other settings "
                                f"({', '.join(changed)}); delete it or restore them")
        net.load_state_dict(state["network"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        plan.update(state["plan"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["augment_rng"])
        if loader_gen is not None and state.get("loader_rng") is not None:
            loader_gen.set_state(state["loader_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history_ = list(state["history"])
        self.stopped_early_ = state["stopped_early"]
        self._log(f"resumed from {self.checkpoint} after epoch {state['epoch']}")
        return state["step"], state["epoch"], state["seconds"]

    @torch.no_grad()
    def _batch_logits(self, X, T=None, batch_size=None):
        """(logits on the CPU, labels) per batch of images ``X``; labels are None for an
        image array, the batch's labels for a stream of (images, labels) batches."""
        net = self._fitted()
        T = None if T is None else check_T(T, error=TrainingError)
        if stream_batches.is_batch_stream(X):
            # the network checks the images' shape
            batches = (stream_batches.checked_batch(batch, k, None, len(self.classes_))
                       for k, batch in enumerate(X))
        else:
            X = _as_images(X)
            bs = positive_int(batch_size or self.eval_batch_size, "batch_size", TrainingError)
            batches = ((torch.from_numpy(X[i:i + bs]), None) for i in range(0, len(X), bs))
        was = net.training
        net.eval()
        try:
            for xb, yb in batches:
                yield net(xb.to(self._device()), T=T).float().cpu(), yb
        finally:
            net.train(was)

    def predict_logits(self, X, T=None, batch_size=None):
        """Unperturbed output logits (n, n_classes) as a numpy array, of images ``X`` or of a
        stream of (images, labels) batches (labels unused)."""
        return torch.cat([z for z, _ in self._batch_logits(X, T, batch_size)]).numpy()

    def predict(self, X, T=None):
        """Class indices (n,): argmax of the unperturbed logits."""
        logits = self.predict_logits(X, T)
        return self.classes_[logits.argmax(1)]

    def score(self, X, y=None, T=None):
        """Accuracy in [0, 1] on ``X``, ``y`` (with ``T`` steps, default the training T);
        ``X`` may be a stream of (images, labels) batches, ``y`` then None."""
        self._fitted()
        if stream_batches.is_batch_stream(X):
            if y is not None:
                raise TrainingError("y must be None when X is a stream of (images, labels) "
                                    "batches: the labels come with the batches")
            hits = seen = 0
            for z, yb in self._batch_logits(X, T):
                hits += int((z.argmax(1) == yb).sum())
                seen += len(yb)
            return hits / seen
        y = check_labels(y, len(X), len(self.classes_), name="y", error=TrainingError)
        return float((self.predict(X, T) == y).mean())

    def accuracy_vs_T(self, X, y, Ts):
        """Accuracies for each number of inference steps in ``Ts`` (numpy array)."""
        return np.array([self.score(X, y, T=T) for T in Ts])

    def energy(self, X, T=None, **kwargs):
        """Energy report (see :func:`brainsnn.analysis.energy.energy_report`) measured on ``X``."""
        from brainsnn.analysis.energy import measure

        net = self._fitted()
        X = _as_images(X)
        if X.ndim == 3:
            X = X[:, None]
        return measure(net, X, batch_size=int(self.eval_batch_size), T=T,
                       device=self._device(), **kwargs)

    def state_dict(self):
        return {k: v.detach().cpu() for k, v in self._fitted().state_dict().items()}


__all__ += ["NetworkError"]
