"""Label assignment and classification for unsupervised (STDP) spiking layers.

As defined in this project (docs/techniques.md), after training every excitatory neuron is
labelled with the class for which its mean spike count is highest on *training* images;
an image is then classified as the class whose labelled neurons fire most on average
(Diehl & Cook 2015). The test set is never used to assign labels.

Example::

    counts_train = net.transform(x_train[:10000])          # (n, N) spike counts
    clf = LabelAssignment(n_classes=10).fit(counts_train, y_train[:10000])
    accuracy = clf.score(net.transform(x_test), y_test)    # fraction in [0, 1]
"""
from __future__ import annotations

import numpy as np

from brainsnn.errors import EvaluationError  # noqa: F401
from brainsnn.params import Params
from brainsnn.validation import check_labels, positive_int

__all__ = ["EvaluationError", "assign_labels", "class_scores", "predict", "accuracy",
           "confusion_matrix", "LabelAssignment"]




def _counts(counts, name="counts") -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 2:
        raise EvaluationError(f"{name} must be shaped (images, neurons), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise EvaluationError(f"{name} must be finite numbers")
    if arr.size and arr.min() < 0:
        raise EvaluationError(f"{name} must be non-negative spike counts")
    return arr.astype(np.float64, copy=False)


def _labels(labels, n, n_classes, name="labels") -> np.ndarray:
    return check_labels(labels, n, n_classes, name=name, error=EvaluationError)


def assign_labels(counts, labels, n_classes=10):
    """Label of each neuron and its mean response per class.

    Parameters
    ----------
    counts : array (images, neurons)
        Spike counts (spikes per image presentation).
    labels : int array (images,)
    n_classes : int

    Returns
    -------
    assignments : int array (neurons,)
        argmax over classes of the mean count (-1 for a neuron that never fired).
    rates : float array (n_classes, neurons)
        Mean spike count per image of each class (0 for a class without images).
    """
    counts = _counts(counts)
    labels = _labels(labels, counts.shape[0], n_classes)
    sums = np.zeros((n_classes, counts.shape[1]))
    np.add.at(sums, labels, counts)
    per_class = np.bincount(labels, minlength=n_classes).astype(np.float64)
    rates = sums / np.maximum(per_class, 1)[:, None]
    assignments = np.argmax(rates, axis=0).astype(np.int64)
    assignments[rates.max(axis=0) <= 0] = -1
    return assignments, rates


def class_scores(counts, assignments, n_classes=10):
    """Mean spike count of the neurons assigned to each class, per image: (images, classes)."""
    counts = _counts(counts)
    assignments = np.asarray(assignments, dtype=np.int64)
    if assignments.shape != (counts.shape[1],):
        raise EvaluationError(f"assignments must have one entry per neuron ({counts.shape[1]}), "
                              f"got shape {assignments.shape}")
    scores = np.zeros((counts.shape[0], n_classes))
    for c in range(n_classes):
        members = assignments == c
        if members.any():
            scores[:, c] = counts[:, members].mean(axis=1)
    return scores


def predict(counts, assignments, n_classes=10):
    """Predicted class of each image (ties: the lowest class index; silent images: -1)."""
    scores = class_scores(counts, assignments, n_classes)
    pred = np.argmax(scores, axis=1).astype(np.int64)
    pred[scores.max(axis=1) <= 0] = -1
    return pred


def accuracy(predictions, labels) -> float:
    """Fraction of correct predictions (a silent image, predicted -1, counts as wrong)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise EvaluationError(f"predictions {predictions.shape} and labels {labels.shape} "
                              "must be 1-D arrays of the same length")
    if predictions.size == 0:
        raise EvaluationError("accuracy of an empty set is undefined")
    return float(np.mean(predictions == labels))


def confusion_matrix(predictions, labels, n_classes=10):
    """Counts (true class, predicted class), shape (n_classes, n_classes + 1).

    The last column counts images predicted -1 (no assigned neuron fired).
    """
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = _labels(labels, predictions.shape[0], n_classes)
    if predictions.size and (predictions.min() < -1 or predictions.max() >= n_classes):
        raise EvaluationError(f"predictions must lie in [-1, {n_classes - 1}]")
    cm = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(cm, (labels, np.where(predictions < 0, n_classes, predictions)), 1)
    return cm


class LabelAssignment(Params):
    """scikit-learn classifier on spike counts: fit on training responses, predict.

    Attributes after :meth:`fit`: ``assignments_`` (neurons,), ``rates_`` (classes, neurons),
    ``classes_`` (the class indices ``0 .. n_classes - 1``).
    """

    def __init__(self, n_classes=10):
        self.n_classes = n_classes

    def fit(self, counts, labels):
        """Label every neuron from training-image spike counts (images, neurons); returns self."""
        n_classes = positive_int(self.n_classes, "n_classes", EvaluationError, minimum=2)
        self.assignments_, self.rates_ = assign_labels(counts, labels, n_classes)
        self.classes_ = np.arange(n_classes)
        return self

    def _check_fitted(self):
        if not hasattr(self, "assignments_"):
            raise EvaluationError("LabelAssignment is not fitted: call fit(counts, labels) "
                                  "on training-image responses first")

    def predict(self, counts):
        """Class of each image (-1 where no labelled neuron fired)."""
        self._check_fitted()
        return predict(counts, self.assignments_, len(self.classes_))

    def score(self, counts, labels):
        """Accuracy (fraction in [0, 1])."""
        pred = self.predict(counts)
        return accuracy(pred, _labels(labels, len(pred), len(self.classes_)))

    def confusion_matrix(self, counts, labels):
        return confusion_matrix(self.predict(counts), labels, len(self.classes_))
