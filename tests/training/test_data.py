import tarfile
import zipfile

import numpy as np
import pytest

from tests.conftest import needs_shared_data, random_images, write_cifar_archive, write_image_folder
from training import data as data_module
from training.data import SHARED_CIFAR_JPEG, DatasetError, fake_images, load_images, split_indices

CLASSES = ["cat", "dog", "ship"]


def expected_cifar(batches):
    images = np.concatenate([b[b"data"].reshape(-1, 3, 32, 32) for b in batches.values()])
    labels = np.concatenate([b[b"labels"] for b in batches.values()])
    return images, labels


def test_official_archive_and_its_extracted_folder(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    images, labels = expected_cifar(write_cifar_archive(archive, per_batch=3))
    loaded = load_images(archive)
    assert np.array_equal(loaded.images, images) and np.array_equal(loaded.labels, labels)
    assert loaded.classes[0] == "airplane" and len(loaded.classes) == 10
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    for folder in (tmp_path / "x", tmp_path / "x" / "cifar-10-batches-py"):
        assert np.array_equal(load_images(folder).images, images)


@pytest.mark.parametrize("layout", ["classes", "flat"])
@pytest.mark.parametrize("container", ["folder", "tar", "tar.gz", "zip"])
def test_image_folders_and_archives(tmp_path, layout, container):
    images = random_images(9)
    classes = CLASSES if layout == "classes" else None
    root = write_image_folder(tmp_path / "train", images, classes)
    source = root
    if container.startswith("tar"):
        source = tmp_path / f"train.{container}"
        with tarfile.open(source, "w:gz" if container == "tar.gz" else "w") as tf:
            tf.add(root, arcname="train")
    elif container == "zip":
        source = tmp_path / "train.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for f in sorted(root.rglob("*.png")):
                zf.write(f, f.relative_to(tmp_path))
    loaded = load_images(source)
    # Files are read in name order: <class>/<index>.png, so sort the expectation the same way.
    order = sorted(range(9), key=lambda i: (CLASSES[i % 3] + "/" if classes else "") + f"{i:04d}")
    assert np.array_equal(loaded.images, images[order])  # PNG is lossless
    if classes:
        assert loaded.classes == CLASSES
        assert loaded.labels.tolist() == [i % 3 for i in order]
    else:
        assert (loaded.labels == -1).all()


def test_jpeg_and_grayscale_images_become_rgb(tmp_path):
    from PIL import Image

    Image.new("L", (32, 32), 128).save(tmp_path / "gray.png")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.jpg", quality=95)
    loaded = load_images(tmp_path)
    assert loaded.images.shape == (2, 3, 32, 32)
    assert (loaded.images[0] == 128).all()
    assert abs(int(loaded.images[1, 0].mean()) - 200) < 4


def test_decoded_once_then_read_from_the_cache(tmp_path, private_cache, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(archive)
    first = load_images(archive)
    assert len(list(private_cache.glob("*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data_module, "_decode", no_decoding)
    again = load_images(archive)
    assert np.array_equal(first.images, again.images) and again.checksum == first.checksum
    # Another file (another checksum) is not served from this cache entry.
    write_cifar_archive(archive, seed=1)
    with pytest.raises(AssertionError, match="decoded again"):
        load_images(archive)


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="nope.tar.gz: no such file"):
        load_images(tmp_path / "nope.tar.gz")


@pytest.mark.parametrize("name, content", [
    ("data.tar.gz", b"\x1f\x8b\x08\x00 definitely not gzip data" * 10),
    ("data.zip", b"PK\x03\x04 truncated zip"),
    ("data.tar", b"\x00" * 10),
])
def test_corrupt_archives(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=name):
        load_images(path)


def test_truncated_archive(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(archive, per_batch=50)
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        load_images(archive)


def test_corrupt_cifar_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_1: not a valid CIFAR-10 batch"):
        load_images(folder)


def test_wrong_image_size_names_the_file(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "d", random_images(2), ["a"])
    Image.new("RGB", (64, 48)).save(tmp_path / "d" / "a" / "big.png")
    with pytest.raises(DatasetError, match=r"a/big.png: image is 64x48, expected 32x32"):
        load_images(tmp_path / "d")


def test_non_image_file_names_the_file(tmp_path):
    write_image_folder(tmp_path / "d", random_images(2), ["a"])
    (tmp_path / "d" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"a/notes.txt: not a readable image"):
        load_images(tmp_path / "d")


def test_hidden_files_are_ignored_but_loose_files_are_not(tmp_path):
    write_image_folder(tmp_path / "d", random_images(2), ["a"])
    (tmp_path / "d" / ".DS_Store").write_bytes(b"\0\1")
    assert len(load_images(tmp_path / "d")) == 2
    write_image_folder(tmp_path / "d", random_images(1))  # a loose image beside the class folders
    with pytest.raises(DatasetError, match="0000.png: a file beside the class folders"):
        load_images(tmp_path / "d")


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="contains no files"):
        load_images(tmp_path)


def test_split_is_seeded_disjoint_and_80_10_10():
    a, b = split_indices(1000, seed=3), split_indices(1000, seed=3)
    assert all(np.array_equal(x, y) for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)))
    assert (len(a.train), len(a.val), len(a.test)) == (800, 100, 100)
    assert len(set(a.train) | set(a.val) | set(a.test)) == 1000
    assert not np.array_equal(split_indices(1000, seed=4).test, a.test)


def test_fraction_keeps_a_prefix_of_each_split():
    full, tenth = split_indices(1000, seed=0), split_indices(1000, seed=0, fraction=0.1)
    assert (len(tenth.train), len(tenth.val), len(tenth.test)) == (80, 10, 10)
    assert np.array_equal(tenth.test, full.test[:10])  # the 10% test images are part of the full test split
    with pytest.raises(ValueError, match="fraction"):
        split_indices(10, fraction=0)


def test_fake_data_is_deterministic_and_shaped():
    a, b = fake_images(64), load_images("fake:64")
    assert a.images.shape == (64, 3, 32, 32) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images)
    assert len(load_images("fake")) == 512


@needs_shared_data
def test_shared_cifar10_jpeg_copy():
    data = load_images(SHARED_CIFAR_JPEG)
    assert data.images.shape == (50000, 3, 32, 32)
    assert np.bincount(data.labels).tolist() == [5000] * 10
    assert data.classes[:3] == ["airplane", "automobile", "bird"]
