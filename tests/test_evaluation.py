"""Label assignment, prediction, accuracy and confusion matrix (hand-computed cases)."""
import numpy as np
import pytest

from brainsnn.stdp.labels import (VOTES, EvaluationError, LabelAssignment, accuracy,
                                 assign_labels, class_scores, confusion_matrix, poisson_scores,
                                 predict, proportion_scores)

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


# 2 neurons, 2 classes: neuron A fires for both classes (2 and 1.5 spikes), neuron B only
# for class 1 (1 spike); A is labelled 0, B 1.
TRAIN_AB = np.array([[2, 0], [2, 0], [1, 1], [2, 1]])
LABELS_AB = np.array([0, 0, 1, 1])


def test_proportion_vote_weights_each_neuron_by_its_share_of_its_class():
    _, rates = assign_labels(TRAIN_AB, LABELS_AB, 2)           # A: [2, 1.5], B: [0, 1]
    image = np.array([[2, 1.5]])
    # mean: 2 against 1.5 -> 0; proportion: A's share of class 0 is 2 / 3.5
    np.testing.assert_allclose(class_scores(image, [0, 1], 2), [[2, 1.5]])
    np.testing.assert_allclose(proportion_scores(image, [0, 1], rates), [[2 * 2 / 3.5, 1.5]])
    assert LabelAssignment(2).fit(TRAIN_AB, LABELS_AB).predict(image) == [0]
    assert LabelAssignment(2, vote="proportion").fit(TRAIN_AB, LABELS_AB).predict(image) == [1]


def test_poisson_vote_is_the_shrunk_poisson_log_likelihood():
    _, rates = assign_labels(TRAIN_AB, LABELS_AB, 2)
    # overall means with one spike over one image more: A (7 + 1) / 5, B (2 + 1) / 5;
    # class means shrunk by one image: lam = (2 * rate + overall) / 3
    lam = np.array([[(4 + 1.6) / 3, (0 + 0.6) / 3], [(3 + 1.6) / 3, (2 + 0.6) / 3]])
    image = np.array([[2, 1]])
    expected = [2 * np.log(lam[c, 0]) + np.log(lam[c, 1]) - lam[c].sum() for c in (0, 1)]
    np.testing.assert_allclose(poisson_scores(image, rates, [2, 2])[0], expected)
    assert expected[1] > expected[0]                               # B's spike decides
    assert LabelAssignment(2, vote="poisson").fit(TRAIN_AB, LABELS_AB).predict(image) == [1]
    assert LabelAssignment(2, vote="mean").fit(TRAIN_AB, LABELS_AB).predict(image) == [0]


@pytest.mark.parametrize("vote", VOTES)
def test_every_vote_fits_its_training_responses_and_leaves_silent_images_unlabelled(vote):
    clf = LabelAssignment(n_classes=3, vote=vote).fit(COUNTS, LABELS)
    np.testing.assert_array_equal(clf.predict(COUNTS), LABELS)
    assert clf.decision_function(COUNTS).shape == (5, 3)
    np.testing.assert_array_equal(clf.predict(np.zeros((2, 4))), [-1, -1])


def test_bad_input_raises():
    for vote in VOTES:
        clf = LabelAssignment(n_classes=3, vote=vote).fit(COUNTS, LABELS)
        with pytest.raises(EvaluationError, match=r"one column per neuron \(4, as in fit\)"):
            clf.predict(np.ones((2, 5)))
    with pytest.raises(EvaluationError, match="vote must be one of mean, proportion, poisson"):
        LabelAssignment(vote="max").fit(COUNTS, LABELS)
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
