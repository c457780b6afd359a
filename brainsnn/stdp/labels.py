"""Label assignment and classification for unsupervised (STDP) spiking layers.

As defined in this project (docs/techniques.md), after training every excitatory neuron is
labelled with the class for which its mean spike count is highest on *training* images;
an image is then classified as the class whose labelled neurons fire most on average
(Diehl & Cook 2015). The test set is never used to assign labels.

Two other readouts use the same training responses (:data:`VOTES`, ``LabelAssignment(vote=)``):

- ``"proportion"``: each neuron's count is weighted by the share of its class in its mean
  responses over all classes (BindsNET's ``proportion_weighting``), so a neuron that fires
  for every class counts less than one that fires for its own only;
- ``"poisson"``: the class under which the image's counts are most likely if each neuron
  fires Poisson-distributed with its mean count for that class (naive Bayes; each class mean
  is shrunk towards the neuron's mean over all classes by one image's worth, so that a
  neuron silent for a class does not veto it).

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

__all__ = ["EvaluationError", "VOTES", "assign_labels", "class_scores", "proportion_scores",
           "poisson_scores", "predict", "accuracy", "confusion_matrix", "LabelAssignment"]

#: The readouts of :class:`LabelAssignment`: Diehl & Cook's group mean, proportion-weighted
#: group mean, Poisson naive Bayes.
VOTES = ("mean", "proportion", "poisson")



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
    return _weighted_group_means(counts, assignments, np.ones((n_classes, counts.shape[1])))


def proportion_scores(counts, assignments, rates):
    """Group means of counts weighted by each neuron's share of its class:
    ``scores[i, c] = mean over neurons n labelled c of counts[i, n] * rates[c, n] /
    sum_k rates[k, n]`` (images, classes); ``rates`` as from :func:`assign_labels`."""
    rates = np.asarray(rates, dtype=np.float64)
    total = rates.sum(axis=0)
    share = np.divide(rates, total, out=np.zeros_like(rates), where=total > 0)
    return _weighted_group_means(_counts(counts), assignments, share)


def _weighted_group_means(counts, assignments, share):
    assignments = np.asarray(assignments, dtype=np.int64)
    if assignments.shape != (counts.shape[1],):
        raise EvaluationError(f"assignments must have one entry per neuron ({counts.shape[1]}), "
                              f"got shape {assignments.shape}")
    scores = np.zeros((counts.shape[0], share.shape[0]))
    for c in range(share.shape[0]):
        members = assignments == c
        if members.any():
            scores[:, c] = counts[:, members] @ share[c, members] / members.sum()
    return scores


def poisson_scores(counts, rates, images_per_class, prior_images=1.0):
    """Poisson log-likelihood of each image's counts under each class, up to a constant
    (images, classes): ``sum_n counts[i, n] * log(lam[c, n]) - lam[c, n]``.

    ``lam[c, n] = (rates[c, n] * m_c + prior_images * r_n) / (m_c + prior_images)``, with
    ``m_c`` the training images of class c and ``r_n`` the neuron's mean count over all of
    them, counted with one spike more over one image more (so that no mean is 0).
    """
    counts = _counts(counts)
    rates = np.asarray(rates, dtype=np.float64)
    m = np.asarray(images_per_class, dtype=np.float64)[:, None]
    overall = ((rates * m).sum(axis=0) + 1.0) / (m.sum() + 1.0)
    lam = (rates * m + prior_images * overall) / (m + prior_images)
    return counts @ np.log(lam).T - lam.sum(axis=1)


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

    Parameters
    ----------
    n_classes : int
    vote : {"mean", "proportion", "poisson"}
        The readout (:data:`VOTES`, module doc): Diehl & Cook's mean count of each class's
        neurons (default), the same weighted by each neuron's share of its class, or Poisson
        naive Bayes over all neurons.

    Attributes after :meth:`fit`: ``assignments_`` (neurons,), ``rates_`` (classes, neurons),
    ``images_per_class_`` (classes,), ``classes_`` (the class indices ``0 .. n_classes - 1``).
    """

    def __init__(self, n_classes=10, vote="mean"):
        self.n_classes = n_classes
        self.vote = vote

    def fit(self, counts, labels):
        """Label every neuron from training-image spike counts (images, neurons); returns self."""
        n_classes = positive_int(self.n_classes, "n_classes", EvaluationError, minimum=2)
        if self.vote not in VOTES:
            raise EvaluationError(f"vote must be one of {', '.join(VOTES)}, got {self.vote!r}")
        self.assignments_, self.rates_ = assign_labels(counts, labels, n_classes)
        self.images_per_class_ = np.bincount(np.asarray(labels, dtype=np.int64),
                                             minlength=n_classes)
        self.classes_ = np.arange(n_classes)
        return self

    def _check_fitted(self):
        if not hasattr(self, "assignments_"):
            raise EvaluationError("LabelAssignment is not fitted: call fit(counts, labels) "
                                  "on training-image responses first")

    def decision_function(self, counts):
        """Score of each class for each image (images, classes); the highest wins."""
        self._check_fitted()
        n = len(self.assignments_)
        if _counts(counts).shape[1] != n:
            raise EvaluationError(f"counts must have one column per neuron ({n}, as in fit), "
                                  f"got shape {np.shape(counts)}")
        if self.vote == "mean":
            return class_scores(counts, self.assignments_, len(self.classes_))
        if self.vote == "proportion":
            return proportion_scores(counts, self.assignments_, self.rates_)
        return poisson_scores(counts, self.rates_, self.images_per_class_)

    def predict(self, counts):
        """Class of each image (-1 where no labelled neuron fired)."""
        scores = self.decision_function(counts)
        pred = np.argmax(scores, axis=1).astype(np.int64)
        labelled = self.assignments_ >= 0
        pred[_counts(counts)[:, labelled].sum(axis=1) <= 0] = -1
        return pred

    def score(self, counts, labels):
        """Accuracy (fraction in [0, 1])."""
        pred = self.predict(counts)
        return accuracy(pred, _labels(labels, len(pred), len(self.classes_)))

    def confusion_matrix(self, counts, labels):
        return confusion_matrix(self.predict(counts), labels, len(self.classes_))
