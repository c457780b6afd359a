"""Label assignment, prediction, accuracy and confusion matrix (hand-computed cases)."""
import numpy as np
import pytest

from brainsnn.stdp.labels import (EvaluationError, LabelAssignment, accuracy, assign_labels,
                                 class_scores, confusion_matrix, predict)

# 4 neurons, 3 classes. Neuron 0 fires for class 0, neuron 1 for class 1, neuron 2 for
# class 2 (more for one image of class 2 than neuron 3 does), neuron 3 never fires.
COUNTS = np.array([[5, 0, 0, 0],
                   [3, 1, 0, 0],
                   [0, 4, 1, 0],
                   [0, 0, 6, 0],
                   [1, 0, 2, 0]])
LABELS = np.array([0, 0, 1, 2, 2])


def test_assign_labels_by_mean_count_per_class():
    assignments, rates = assign_labels(COUNTS, LABELS, n_classes=3)
    # mean per class: class 0 -> [4, .5, 0, 0], class 1 -> [0, 4, 1, 0], class 2 -> [.5, 0, 4, 0]
    np.testing.assert_allclose(rates, [[4, .5, 0, 0], [0, 4, 1, 0], [.5, 0, 4, 0]])
    np.testing.assert_array_equal(assignments, [0, 1, 2, -1])


def test_assignment_normalises_by_class_size():
    # neuron 0 fires 1 spike for each of 3 class-0 images and 2 for the one class-1 image:
    # total 3 vs 2, but the mean (1 vs 2) says class 1
    counts = np.array([[1], [1], [1], [2]])
    assignments, _ = assign_labels(counts, np.array([0, 0, 0, 1]), n_classes=2)
    assert assignments[0] == 1


def test_predict_mean_over_assigned_neurons():
    assignments = np.array([0, 1, 1, 2])
    counts = np.array([[3, 4, 0, 0],    # class 0: 3, class 1: mean(4, 0) = 2 -> 0
                       [3, 4, 4, 0],    # class 1: 4 -> 1
                       [0, 0, 0, 1],    # class 2
                       [0, 0, 0, 0]])   # silent -> -1
    np.testing.assert_allclose(class_scores(counts, assignments, 3)[0], [3, 2, 0])
    np.testing.assert_array_equal(predict(counts, assignments, 3), [0, 1, 2, -1])


def test_accuracy_and_confusion_matrix():
    pred = np.array([0, 1, 1, -1, 2])
    y = np.array([0, 1, 2, 2, 2])
    assert accuracy(pred, y) == pytest.approx(3 / 5)
    cm = confusion_matrix(pred, y, n_classes=3)
    expected = np.array([[1, 0, 0, 0],
                         [0, 1, 0, 0],
                         [0, 1, 1, 1]])
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == len(y)


def test_label_assignment_estimator():
    clf = LabelAssignment(n_classes=3).fit(COUNTS, LABELS)
    np.testing.assert_array_equal(clf.predict(COUNTS), [0, 0, 1, 2, 2])
    assert clf.score(COUNTS, LABELS) == 1.0
    assert clf.confusion_matrix(COUNTS, LABELS).trace() == 5


def test_bad_input_raises():
    with pytest.raises(EvaluationError, match="not fitted"):
        LabelAssignment().predict(COUNTS)
    with pytest.raises(EvaluationError, match="shaped"):
        assign_labels(COUNTS[0], LABELS)
    with pytest.raises(EvaluationError, match=r"\(5,\)"):
        assign_labels(COUNTS, LABELS[:3])
    with pytest.raises(EvaluationError, match=r"expected class indices 0..2"):
        assign_labels(COUNTS, np.array([0, 0, 1, 2, 7]), n_classes=3)
    with pytest.raises(EvaluationError, match="non-negative"):
        assign_labels(-COUNTS, LABELS)
    with pytest.raises(EvaluationError, match="one entry per neuron"):
        predict(COUNTS, np.array([0, 1]))
    with pytest.raises(EvaluationError, match="same length"):
        accuracy(np.array([1, 2]), np.array([1]))
