"""The trained-measure benchmark (benchmarks/trained_measure.py): its network behaves as a focus
measure must, and training through the rendered stacks' truth improves the fusion it drives."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import trained_measure as tm  # noqa: E402


def test_energy_scales_with_contrast_squared_and_ignores_offsets():
    network = tm.make_network()
    gray = torch.rand(1, 1, 40, 48)
    with torch.no_grad():
        energy = network(gray) ** 2
        assert torch.allclose(network(3 * gray) ** 2, 9 * energy, rtol=1e-4, atol=1e-6)
        assert torch.allclose(network(gray + 0.5) ** 2, energy, rtol=1e-4, atol=1e-5)


def test_training_on_rendered_stacks_improves_the_fusion_it_drives():
    stacks = [tm.training_stack(i, shape=(64, 80)) for i in range(3)]
    assert all(np.isfinite(s).all() and s.shape[1:3] == (64, 80) for s, _, _ in stacks)
    trainer = tm.Trainer(stacks)
    network = tm.make_network()
    before = trainer.psnr(lambda g: network(g) ** 2, trainer.stacks)
    tm.train(network, trainer, trainer.stacks, trainer.stacks, epochs=8, log=lambda line: None)
    after = trainer.psnr(lambda g: network(g) ** 2, trainer.stacks)
    assert after > before + 0.5
