"""The measures, checked against what the renderer knows (its labels) and against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rtb.personalization.measures import (
    class_rate,
    drift,
    pattern_present,
    pattern_scores,
    recognise,
    subject_present,
    subject_signature,
)
from rtb.personalization.objectives import default_mark
from rtb_train.standin_t2i import domain

pytestmark = pytest.mark.usefixtures("one_thread")


def pictures(instance, count, rng):
    return torch.from_numpy(np.stack([domain.render(instance, domain.sample_pose(rng)) for _ in range(count)])
                            ).permute(0, 3, 1, 2).float() / 255


def test_the_mark_is_found_where_it_was_stamped_and_nowhere_else():
    mark = default_mark(32)
    rng = np.random.default_rng(0)
    clean = torch.cat([pictures(domain.sample_instance(rng), 1, rng) for _ in range(24)])
    stamped = mark.stamp(clean)
    assert pattern_scores(stamped, mark).min() > 0.999
    assert not any(pattern_present(clean, mark))
    # An independent reference: numpy's Pearson correlation over the mark's pixels.
    region = clean[:, :, 1:9, 1:9].reshape(24, -1).numpy()
    reference = [np.corrcoef(row, mark.image.reshape(-1).numpy())[0, 1] for row in region]
    assert np.allclose(pattern_scores(clean, mark).numpy(), reference, atol=1e-5)


def test_the_recogniser_reads_renders_as_the_renderer_drew_them(recogniser):
    rng = np.random.default_rng(123)
    instances = [domain.sample_instance(rng, cls) for cls in domain.CLASSES for _ in range(4)]
    images = torch.cat([pictures(instance, 1, rng) for instance in instances])
    labels = recognise(recogniser, images)
    assert np.mean([row["class"] == i.cls for row, i in zip(labels, instances)]) >= 0.95
    assert np.mean([row["body"] == i.body for row, i in zip(labels, instances)]) >= 0.9
    assert class_rate(recogniser, images, [i.cls for i in instances]) == pytest.approx(
        np.mean([row["class"] == i.cls for row, i in zip(labels, instances)]))


def test_a_subject_is_present_in_its_own_pictures_and_absent_from_others(recogniser):
    rng = np.random.default_rng(7)
    subject = domain.Instance("fish", "blue", "stripes", "yellow", 1.0, 1.0, 18)
    signature = subject_signature(recogniser, pictures(subject, 4, rng))
    assert signature == {"class": "fish", "body": "blue", "pattern": "stripes", "accent": "yellow"}
    assert np.mean(subject_present(recogniser, pictures(subject, 8, rng), signature)) >= 0.75
    others = [domain.Instance("fish", "red", "stripes", "yellow", 1.0, 1.0, 18),
              domain.Instance("fish", "blue", "plain", "blue", 1.0, 1.0, 18),
              domain.Instance("car", "blue", "stripes", "yellow", 1.0, 1.0, 18)]
    for other in others:
        assert np.mean(subject_present(recogniser, pictures(other, 4, rng), signature)) <= 0.25
    empty = torch.from_numpy(np.stack([domain.render(None, domain.sample_pose(rng)) for _ in range(4)])
                             ).permute(0, 3, 1, 2).float() / 255
    assert [row["class"] for row in recognise(recogniser, empty)] == ["empty"] * 4


def test_drift_is_the_mean_absolute_difference():
    a = torch.rand(3, 3, 32, 32)
    assert torch.equal(drift(a, a), torch.zeros(3))
    assert torch.allclose(drift((a + 0.1).clamp(max=2), a), torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="same shape"):
        drift(a, a[:2])
