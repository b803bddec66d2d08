import torch

from helio_core.methods.refinement import consistency_loss, low_resolution, refine
from helio_core.models.projector import ProjectorSpec, build_projector
from helio_core.params import load_params
from helio_core.progress import SILENT
from tests.conftest import REPO


def test_low_resolution_keeps_flat_images_and_removes_fine_detail():
    flat = torch.full((1, 1, 8, 8), 0.3)
    torch.testing.assert_close(low_resolution(flat, 2), flat)
    checker = (torch.arange(8).view(1, 8) + torch.arange(8).view(8, 1)).remainder(2).float().view(1, 1, 8, 8)
    assert low_resolution(checker, 2).std() < 0.1 * checker.std()


def test_refinement_lowers_eq7_loss_and_stays_valid_pixels():
    torch.manual_seed(0)
    spec = ProjectorSpec("efficientnet_lite0", 32, "multi", "random", 2, 2.0, "all", 0)
    projector = build_projector(spec, ["a", "b", "c"], logit_scale=10.0, seed=0)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    params = load_params(REPO / "params.yaml", ["refine.steps=15", "refine.lr=0.02", "refine.batch_size=4"]).refine
    refined, losses = refine(projector, images, params, SILENT)
    assert refined.dtype == torch.uint8 and refined.shape == images.shape
    assert losses["loss_after"] < 0.8 * losses["loss_before"]
    with torch.no_grad():
        recomputed = consistency_loss(projector, refined.float() / 255, 2).mean().item()
    assert abs(recomputed - losses["loss_after"]) < 1e-6
    assert not torch.equal(refined, images)
