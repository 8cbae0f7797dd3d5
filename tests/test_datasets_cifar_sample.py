"""The committed real CIFAR-10 sample: loads offline, is what its README says, refuses a changed file."""
import shutil

import numpy as np
import pytest

from minicct.datasets import load
from minicct.datasets.cifar_sample import CLASS_NAMES, load_cifar10_sample, sample_dir


@pytest.fixture(scope="module")
def sample():
    return load("cifar10_sample")


def test_shapes_and_labels(sample):
    assert sample.x_train.shape == (3000, 32, 32, 3) and sample.x_train.dtype == np.uint8
    assert sample.x_test.shape == (1000, 32, 32, 3)
    assert sample.class_names == CLASS_NAMES and sample.num_classes == 10
    # official test_batch rows 0..9 and training rows 45000.. (data_batch_5 rows 5000..)
    assert sample.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert np.bincount(sample.y_test, minlength=10).min() >= 80           # every label present
    assert np.bincount(sample.y_train, minlength=10).min() >= 250
    assert sample.groups["vehicle_or_animal"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]


def test_pixels_are_natural_images(sample):
    # real photographs: channel means near CIFAR-10's published ones, no two images equal
    m = sample.x_test.reshape(-1, 3).mean(0) / 255
    assert np.allclose(m, [0.49, 0.48, 0.45], atol=0.03)
    flat = sample.x_train.reshape(len(sample.x_train), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)


def test_changed_file_is_refused(tmp_path):
    folder = tmp_path / "s"
    shutil.copytree(sample_dir(), folder)
    with open(folder / "cifar10_batch_50.png", "r+b") as f:
        f.seek(5000)
        b = f.read(1)
        f.seek(5000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(ValueError, match="md5"):
        load_cifar10_sample(root=folder)


def test_committed_real_checkpoints_reproduce_their_accuracy(sample):
    """The real-data checkpoints score on the sample's test images exactly what training recorded."""
    from minicct.io.checkpoints import load_any_checkpoint
    from minicct.resources import find_data
    from minicct.train.loop import evaluate
    for name, recorded in (("cifar10_classroom.npz", 0.775), ("cifar10_classroom_4heads.npz", 0.76)):
        params, cfg, meta = load_any_checkpoint(find_data("checkpoints") / name)
        assert meta["test_acc"] == pytest.approx(recorded)
        _, acc = evaluate(params, cfg, sample.x_test, sample.y_test, sample.mean, sample.std)
        assert acc == pytest.approx(recorded, abs=1e-9)


def test_auto_dataset_follows_the_committed_checkpoint():
    import argparse

    from minicct.__main__ import _dataset_for
    auto = argparse.Namespace(dataset="auto")
    assert _dataset_for(auto, "data/checkpoints/cifar10_classroom_4heads.npz") == "cifar10_sample"
    assert _dataset_for(auto, "data/checkpoints/classroom.npz") == "embedded"
    assert _dataset_for(auto, "my_model.npz") == "embedded"
    assert _dataset_for(argparse.Namespace(dataset="cifar10"), "data/checkpoints/classroom.npz") == "cifar10"
