"""Multi-label deep supervision targets and loss, mean teacher."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_tubular.losses import DeepSupervisionLoss, MeanTeacher, multilabel_pyramid_targets


def _label(seed=0, shape=(1, 8, 8, 8), ncls=4):
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(shape, dtype=torch.long)
    lab[torch.rand(shape, generator=g) > 0.9] = 1
    lab[torch.rand(shape, generator=g) > 0.97] = 3
    lab[0, 1, 2, 3] = 2  # one voxel of class 2
    return lab


def _brute(lab, ncls, f):
    """Reference: is class c present in the f x f x f block (numpy loops)."""
    a = lab.numpy()
    b, z, y, x = a.shape
    out = np.zeros((b, ncls - 1, z // f, y // f, x // f), np.float32)
    for i in range(z // f):
        for j in range(y // f):
            for k in range(x // f):
                cell = a[:, i * f:(i + 1) * f, j * f:(j + 1) * f, k * f:(k + 1) * f]
                for c in range(1, ncls):
                    out[:, c - 1, i, j, k] = (cell == c).reshape(b, -1).any(1)
    return out


def test_targets_are_per_class_presence():
    lab = _label()
    levels = multilabel_pyramid_targets(lab, [(8, 8, 8), (4, 4, 4), (2, 2, 2), (1, 1, 1)], num_classes=4)
    assert [tuple(t.shape) for t in levels] == [(1, 3, 8, 8, 8), (1, 3, 4, 4, 4), (1, 3, 2, 2, 2), (1, 3, 1, 1, 1)]
    for t, f in zip(levels[1:3], (2, 4)):
        assert np.array_equal(t.numpy(), _brute(lab, 4, f))
    # the single class-2 voxel makes exactly one coarse cell positive for class 2 (multi-label)
    assert levels[1][0, 1].sum() == 1
    assert levels[1][0, 1, 0, 1, 1] == 1
    assert levels[1][0, :, 0, 1, 1].sum() >= 1
    # image level: presence of each class anywhere
    assert levels[3].flatten().tolist() == [1.0, 1.0, 1.0]
    # multi-hot input gives the same targets; background kept on request
    onehot = F.one_hot(lab, 4).permute(0, 4, 1, 2, 3)[:, 1:].float()
    assert torch.equal(multilabel_pyramid_targets(onehot, [(4, 4, 4)])[0], levels[1])
    assert multilabel_pyramid_targets(lab, [(4, 4, 4)], 4, include_background=True)[0].shape[1] == 4


def test_bounding_box_masks_and_uneven_sizes():
    box = torch.zeros(1, 1, 9, 9, 9)
    box[..., 2:5, 3:7, 1:4] = 1
    t = multilabel_pyramid_targets(box, [(3, 3, 3), (4, 5, 4)])
    # z 2:5 touches cells 0, 1; y 3:7 cells 1, 2; x 1:4 cells 0, 1 (cells of 3 voxels)
    expected = sorted([z, y, x] for z in (0, 1) for y in (1, 2) for x in (0, 1))
    assert sorted(t[0][0, 0].nonzero().tolist()) == expected
    assert t[1].shape == (1, 1, 4, 5, 4)
    assert t[1].sum() > 0
    with pytest.raises(ValueError, match="level size"):
        multilabel_pyramid_targets(box, [(10, 9, 9)])
    with pytest.raises(ValueError, match="num_classes"):
        multilabel_pyramid_targets(box[:, 0].long(), [(3, 3, 3)])


def test_loss_is_mean_of_level_bces_and_monotone():
    lab = _label(1)
    sizes = [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    targets = multilabel_pyramid_targets(lab, sizes, num_classes=4)
    loss = DeepSupervisionLoss(num_classes=4)
    g = torch.Generator().manual_seed(0)
    heads = [torch.randn(t.shape, generator=g) for t in targets]
    ref = torch.stack([F.binary_cross_entropy_with_logits(h, t) for h, t in zip(heads, targets)]).mean()
    assert float(loss(heads, lab)) == pytest.approx(float(ref), rel=1e-6)
    assert float(loss(heads, targets)) == pytest.approx(float(ref), rel=1e-6)
    assert loss.last_parts["levels"].shape == (3,)
    vals = [float(loss([m * (2 * t - 1) for t in targets], lab)) for m in (20.0, 4.0, 1.0, 0.0, -2.0)]
    assert vals[0] < 1e-6
    assert all(b > a for a, b in zip(vals, vals[1:]))
    w = DeepSupervisionLoss(level_weights=[2, 1, 1], num_classes=4)(heads, lab)
    loss(heads, lab)
    parts = loss.last_parts["levels"]
    assert float(w) == pytest.approx(float(0.5 * parts[0] + 0.25 * parts[1] + 0.25 * parts[2]), rel=1e-6)


def test_gradcheck():
    lab = _label(2, shape=(1, 4, 4, 4))
    targets = multilabel_pyramid_targets(lab, [(4, 4, 4), (2, 2, 2)], num_classes=4)
    h = [torch.randn(t.shape, dtype=torch.float64, requires_grad=True) for t in targets]
    loss = DeepSupervisionLoss()
    assert torch.autograd.gradcheck(lambda a, b: loss([a, b], targets), tuple(h))


def test_mean_teacher():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    mt = MeanTeacher(student, alpha=0.9)
    t0 = [p.clone() for p in mt.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()(torch.randn(2, 1, 3, 3, 3))  # changes BatchNorm running stats
    mt.update(student)
    for a, s, t in zip(t0, student.parameters(), mt.teacher.parameters()):
        assert torch.allclose(t, 0.9 * a + 0.1 * s)
    assert int(mt.teacher[1].num_batches_tracked) == int(student[1].num_batches_tracked)
    assert not any(p.requires_grad for p in mt.teacher.parameters())
    out = mt(torch.randn(1, 1, 3, 3, 3))
    assert not out.requires_grad
    copy = MeanTeacher(student, alpha=0.0)
    copy.update(student)
    assert all(torch.equal(a, b) for a, b in zip(copy.teacher.parameters(), student.parameters()))
    warm = MeanTeacher(student, alpha=0.999, warmup=True)
    assert warm.current_alpha() == 0.0
    warm.update(student)
    assert warm.current_alpha() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="alpha"):
        MeanTeacher(student, alpha=1.5)


def test_multi_hot_labels_outside_unit_range_are_refused():
    """An audit: a 0/255 multi-hot label gave a loss of -154, float class ids {0, 2} a loss
    without a word."""
    lab = _label(1)
    targets = multilabel_pyramid_targets(lab, [(8, 8, 8)], num_classes=4)
    heads = [torch.zeros(t.shape) for t in targets]
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\]"):
        DeepSupervisionLoss()(heads, targets[0] * 255)
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\]"):
        DeepSupervisionLoss()(heads, targets[0] * 2.0)


@pytest.mark.parametrize("bad", [[float("nan"), 1.0], [float("inf"), 1.0], [1e308, 1e308]])
def test_non_finite_level_weights_are_refused(bad):
    """An outside audit: a NaN level weight passed the check and made every loss NaN."""
    with pytest.raises(ValueError, match="level_weights must be non-negative"):
        DeepSupervisionLoss(level_weights=bad)


def test_pos_weight_of_another_class_count_is_refused():
    """An outside audit: 3 positive weights for 1-class heads crashed with torch's
    "doesn't match the broadcast shape" RuntimeError."""
    heads = [torch.zeros((1, 1, 4, 4, 4))]
    label = torch.zeros((1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="pos_weight has 3 classes, heads.0. has 1 channels"):
        DeepSupervisionLoss(pos_weight=[1.0, 2.0, 3.0])(heads, label)
    assert torch.isfinite(DeepSupervisionLoss(pos_weight=[2.0])(heads, label))
    heads3 = [torch.zeros((1, 3, 4, 4, 4))]
    assert torch.isfinite(DeepSupervisionLoss(pos_weight=2.0)(heads3, label.expand(1, 3, 4, 4, 4)))


def test_non_integer_level_size_is_refused():
    """An outside judge: a level size of 2.7 was truncated to 2 without a word."""
    with pytest.raises(ValueError, match=r"level size \(2.7, 4, 4\) must be 3 positive ints"):
        multilabel_pyramid_targets(torch.zeros((1, 1, 8, 8, 8)), [(2.7, 4, 4)])
    assert multilabel_pyramid_targets(torch.zeros((1, 1, 8, 8, 8)), [(np.int64(2), 4, 4.0)])[0].shape == (
        1, 1, 2, 4, 4)


def test_mean_teacher_load_state_dict_refuses_a_foreign_dict():
    """An outside judge: a foreign dict (here a network's own state_dict) ended in a bare
    ``KeyError: 'teacher'``, a state without 'alpha' in ``KeyError: 'alpha'`` after its teacher
    had been loaded. Now a ValueError says what is wrong, and nothing changes."""
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    mt = MeanTeacher(student, alpha=0.9)
    before = {k: v.clone() for k, v in mt.teacher.state_dict().items()}
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 1))
    good = mt.state_dict()
    cases = [
        (student.state_dict(), r"missing key\(s\) teacher, alpha, warmup, step_count .*"
                               r"looks like a network's state_dict"),
        ({"teacher": good["teacher"]}, r"missing key\(s\) alpha, warmup, step_count"),
        ([1, 2], "expects the dict of MeanTeacher.state_dict"),
        ({**good, "alpha": 1.5}, r"'alpha' must be in \[0, 1\]"),
        ({**good, "step_count": -1}, "'step_count' must be an integer >= 0"),
        ({**good, "teacher": other.state_dict(), "alpha": 0.5}, "does not fit this network"),
    ]
    for state, match in cases:
        with pytest.raises(ValueError, match=match):
            mt.load_state_dict(state)
        assert (mt.alpha, mt.step_count) == (0.9, 0)
        assert all(torch.equal(v, before[k]) for k, v in mt.teacher.state_dict().items())
    fresh = MeanTeacher(student, alpha=0.5)
    fresh.load_state_dict({**good, "step_count": 7})
    assert (fresh.alpha, fresh.step_count) == (0.9, 7)
