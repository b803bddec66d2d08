import torch

from helio_core.data import views as augment


def _plan(n=10, epochs=2, batch=4, size=16, cutmix=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return augment.plan_views(n, epochs, batch, size, [0.25, 1.0], True, cutmix, generator)


def test_plan_is_seeded_and_each_epoch_is_a_permutation():
    plan, again = _plan(), _plan()
    for name, tensor in plan.tensors().items():
        assert torch.equal(tensor, again.tensors()[name]), name
    for epoch in range(plan.epochs):
        assert sorted(plan.order[epoch].tolist()) == list(range(10))
    assert [(b.start, b.stop) for b in plan.batches()] == [(0, 4), (4, 8), (8, 10)]


def test_crop_boxes_respect_area_range_and_image_bounds():
    boxes = augment.crop_boxes(2000, 32, [0.25, 1.0], torch.Generator().manual_seed(1)).long()
    top, left, height, width = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 32).all() and (left + width <= 32).all()
    area = (height * width).float() / 32**2
    assert area.min() > 0.15 and area.max() <= 1.0 and area.mean() > 0.45


def test_full_box_without_flip_or_cutmix_renders_the_image_itself():
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1])
    plan = augment.plan_views(4, 1, 4, 8, [1.0, 1.0], False, False, torch.Generator().manual_seed(0))
    plan = augment.ViewPlan(plan.order, torch.tensor([[[0, 0, 8, 8]] * 4], dtype=torch.int16), plan.flips,
                            plan.partners, plan.mix_boxes, plan.batch_size)  # fmt: skip
    views, targets = augment.render_views(images, labels, plan, 0, slice(0, 4), 3)
    index = plan.order[0].long()
    torch.testing.assert_close(views, images[index].float() / 255, atol=1e-5, rtol=0)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels[index], 3).float())


def test_cutmix_pastes_the_partner_region_and_mixes_labels_by_area():
    images = torch.stack([torch.full((1, 8, 8), 10 * k, dtype=torch.uint8) for k in range(4)])
    labels = torch.tensor([0, 1, 2, 3])
    base = augment.plan_views(4, 1, 4, 8, [1.0, 1.0], False, False, torch.Generator().manual_seed(0))
    plan = augment.ViewPlan(
        order=torch.tensor([[0, 1, 2, 3]], dtype=torch.int16),
        boxes=torch.tensor([[[0, 0, 8, 8]] * 4], dtype=torch.int16),
        flips=base.flips,
        partners=torch.tensor([[1, 0, 3, 2]], dtype=torch.int16),
        mix_boxes=torch.tensor([[[2, 2, 4, 4]]], dtype=torch.int16),  # a 4x4 region: a quarter of the image
        batch_size=4,
    )
    views, targets = augment.render_views(images, labels, plan, 0, slice(0, 4), 4)
    assert torch.allclose(views[0, 0, 2:6, 2:6] * 255, torch.tensor(10.0))  # image 1 pasted into image 0
    assert torch.allclose(views[0, 0, 0, 0] * 255, torch.tensor(0.0))
    torch.testing.assert_close(targets[0], torch.tensor([0.75, 0.25, 0.0, 0.0]))
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


def test_flip_mirrors_the_view():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    plan = augment.ViewPlan(
        order=torch.tensor([[0, 1]], dtype=torch.int16),
        boxes=torch.tensor([[[0, 0, 4, 4]] * 2], dtype=torch.int16),
        flips=torch.tensor([[0, 1]], dtype=torch.int16),
        partners=torch.tensor([[0, 1]], dtype=torch.int16),
        mix_boxes=torch.zeros(1, 1, 4, dtype=torch.int16),
        batch_size=2,
    )
    views, _ = augment.render_views(images, torch.tensor([0, 0]), plan, 0, slice(0, 2), 1)
    torch.testing.assert_close(views[1], views[0].flip(-1))


def test_no_crop_scale_plans_whole_views_and_without_flip_or_cutmix_the_images_themselves():
    """DD-Ranking's no-augmentation student (student.crop, flip and cutmix false) sees each image as it is."""
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    plan = augment.plan_views(6, 3, 4, 8, None, False, False, torch.Generator().manual_seed(0))
    assert torch.equal(plan.boxes, torch.tensor([0, 0, 8, 8], dtype=torch.int16).expand(3, 6, 4))
    for epoch in range(plan.epochs):
        for batch in plan.batches():
            views, targets = augment.render_views(images, labels, plan, epoch, batch, 3)
            index = plan.order[epoch, batch].long()
            torch.testing.assert_close(views, images[index].float() / 255, atol=1e-5, rtol=0)
            assert torch.equal(targets, torch.nn.functional.one_hot(labels[index], 3).float())
