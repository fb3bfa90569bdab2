"""A flat folder of images with a labels file: the layout teams keep their digits in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.cli import main
from digitlab.data import labelsfile
from digitlab.data.sources import load, read_path
from digitlab.errors import DataError, DataWarning

N = 20


@pytest.fixture
def flat(tmp_path, small_splits):
    """N real digits as PNGs in one folder, and a labels.csv listing them (a header row)."""
    images, labels = small_splits["train"]
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(N):
        Image.fromarray(images[i]).save(folder / f"d{i:02d}.png")
    write(folder / "labels.csv", "filename,label", *(f"d{i:02d}.png,{labels[i]}" for i in range(N)))
    return folder, images[:N], labels[:N]


def write(path, *lines: str) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_flat_folder_reads_in_file_order(flat) -> None:
    folder, images, labels = flat
    splits = read_path(folder)
    assert list(splits) == ["train"]
    got_images, got_labels = splits["train"]
    assert got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_flat_folder_gets_the_usual_stratified_hold_out(flat) -> None:
    folder, _, _ = flat
    dataset = load(folder, test_fraction=0.25, seed=3)
    assert 0 < len(dataset.test_labels) < N // 2
    assert len(dataset.train_labels) + len(dataset.test_labels) == N
    assert any("held out a stratified 25%" in note for note in dataset.notes)
    again = load(folder, test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.test_images, dataset.test_images)


@pytest.mark.parametrize("header", ["file,class", " Image , Digit ", "image_name,target,notes",
                                    "Label,File-Name", "path,y"])
def test_header_names_teams_use(flat, header) -> None:
    folder, images, labels = flat
    names = [c.strip().lower() for c in header.split(",")]
    label_first = names[0] in ("label",)
    rows = [f"{labels[i]},d{i:02d}.png" if label_first else f"d{i:02d}.png,{labels[i]}"
            + (",seen" if len(names) == 3 else "") for i in range(N)]
    write(folder / "labels.csv", header, *rows)
    got_images, got_labels = read_path(folder)["train"]
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_images, images)


def test_no_header_is_read_as_file_then_label(flat) -> None:
    folder, _, labels = flat
    write(folder / "labels.csv", *(f"d{i:02d}.png,{labels[i]}" for i in range(N)))
    np.testing.assert_array_equal(read_path(folder)["train"][1], labels)


def test_ids_without_suffix_and_windows_line_ends(flat) -> None:
    folder, _, labels = flat
    text = "id,label\r\n" + "".join(f"d{i:02d},{labels[i]}\r\n" for i in range(N))
    (folder / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Excel saves it
    np.testing.assert_array_equal(read_path(folder)["train"][1], labels)


def test_labels_file_elsewhere_and_sub_folders(tmp_path, flat) -> None:
    folder, images, labels = flat
    (folder / "labels.csv").unlink()
    (folder / "batch2").mkdir()
    (folder / "d19.png").rename(folder / "batch2" / "d19.png")
    other = tmp_path / "elsewhere" / "truth.csv"
    other.parent.mkdir()
    write(other, "filename,label", *(f"d{i:02d}.png,{labels[i]}" for i in range(N - 1)),
          f"batch2/d19.png,{labels[N - 1]}")
    with pytest.raises(DataError, match=r"d00\.png: image is not inside a class folder"):
        read_path(folder)  # no labels.csv: read as a tree of class folders
    np.testing.assert_array_equal(read_path(folder, labels=other)["train"][0], images)
    dataset = load(folder, labels=other)
    assert len(dataset.train_labels) + len(dataset.test_labels) == N


def test_split_column_chooses_the_test_images(flat) -> None:
    folder, images, labels = flat
    rows = [f"d{i:02d}.png,{labels[i]},{'Test' if i % 4 == 0 else 'train'}" for i in range(N)]
    write(folder / "labels.csv", "filename,label,split", *rows)
    dataset = load(folder)
    np.testing.assert_array_equal(dataset.test_images, images[::4])
    assert not any("held out" in note for note in dataset.notes)


def test_stray_and_non_image_files_are_not_images(flat) -> None:
    folder, images, _ = flat
    (folder / ".DS_Store").write_bytes(b"\0\0")
    (folder / "README.txt").write_text("our scans")
    np.testing.assert_array_equal(read_path(folder)["train"][0], images)


def _problem(folder, lines: list[str] | bytes) -> str:
    path = folder / "labels.csv"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        write(path, *lines)
    with pytest.raises(DataError) as caught:
        read_path(folder)
    return str(caught.value)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["filename,label", "d00.png,1", "gone.png,2"], "labels.csv: line 3: no image 'gone.png' in"),
        (["filename,label", "d00.png,1", "d00.png,2"], "line 3: 'd00.png' is listed twice (also on line 2)"),
        (["filename,label", "", "d00.png,seven"], "line 3: label 'seven' is not a class number (labels are class numbers 0..999)"),
        (["filename,label", "d00.png,-1"], "line 2: label '-1' is not a class number"),
        (["filename,label", "d00.png,1000"], "line 2: label 1000 is too large for a class (labels are class numbers 0..999)"),
        (["filename,label", "d00.png,99999999999999999999"], "line 2: label '99999999999999999999' is too large"),
        (["filename,label", "d00.png"], "line 2: expected 2 columns, got 1"),
        (["filename,label", ",3"], "line 2: the file name is empty"),
        (["filename,label", "../d00.png,3"], "line 2: '../d00.png' is not a file inside"),
        (["filename,label", "/etc/passwd,3"], "line 2: '/etc/passwd' is not a file inside"),
        (["filename,label", "README.txt,3"], "line 2: 'README.txt' is not an image file"),
        (["filename,label,split", "d00.png,3,val"], "line 2: split 'val' is not train or test"),
        (["name,value", "d00.png,3"], "line 1: the header 'name,value' names no label column "
         "(label, class, digit or target)"),
        (["digit,value", "d00.png,3"], "names no file-name column (filename, file, image or path)"),
        (["filename,label"], "labels file lists no images (only a header)"),
        ([" ", ""], "labels file is empty"),
        (b"", "labels file is empty"),
        (b"filename,label\nd00.png,1\nd\xff.png,2\n", "line 3 is not UTF-8 text"),
        (b"filename,label\nd00.png,1\0\n", "line 2 holds NUL bytes"),
    ],
)
def test_bad_labels_files_name_the_line(flat, lines, message) -> None:
    folder, _, _ = flat
    (folder / "README.txt").write_text("not an image")
    assert message in _problem(folder, lines)


def test_a_test_split_alone_is_refused(flat) -> None:
    folder, _, labels = flat
    rows = [f"d{i:02d}.png,{labels[i]},test" for i in range(N)]
    assert "every image is in the test split: none is left to train on" in _problem(
        folder, ["filename,label,split", *rows])


def test_image_not_listed_is_named(flat) -> None:
    folder, _, labels = flat
    message = _problem(folder, ["filename,label", *(f"d{i:02d}.png,{labels[i]}" for i in range(N - 3))])
    assert f"d{N - 3}.png: image is not listed in {folder / 'labels.csv'} (3 images there are not)" in message


def test_too_big_labels_file_is_refused_unread(flat, monkeypatch) -> None:
    folder, _, _ = flat
    monkeypatch.setattr(labelsfile, "MAX_LABELS_BYTES", 100)
    message = _problem(folder, ["filename,label", *(f"d{i:02d}.png,1" for i in range(N))])
    assert "labels.csv: the file would take" in message
    assert "more than the 100 digitlab reads" in message


def test_labels_go_with_folders_only(tmp_path, flat) -> None:
    folder, _, _ = flat
    with pytest.raises(DataError, match="a labels file goes with a folder of images, not with digits"):
        load("digits", labels=folder / "labels.csv")
    npz = tmp_path / "x.npz"
    np.savez(npz, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="a labels file needs a folder of images"):
        load(npz, labels=folder / "labels.csv")
    with pytest.raises(DataError, match="no such labels file"):
        load(folder, labels=tmp_path / "nope.csv")


def test_varied_sizes_are_refused_with_a_hint(flat) -> None:
    folder, images, _ = flat
    Image.fromarray(images[3]).resize((40, 30)).save(folder / "d03.png")
    with pytest.raises(DataError, match=r"d03.png: image is 40x30 pixels but .*d00.png is 28x28; all "
                       r"must match, unless each digit is normalised as predict does \(--normalise\)"):
        read_path(folder)


def test_cli_reads_flat_folders_and_other_labels_files(tmp_path, flat, capsys) -> None:
    folder, _, _labels = flat
    assert main(["data", "info", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["count"] + summary["splits"]["test"]["count"] == N
    moved = tmp_path / "truth.csv"
    (folder / "labels.csv").rename(moved)
    assert main(["data", "convert", str(folder), str(tmp_path / "out.npz"), "--labels", str(moved)]) == 0
    capsys.readouterr()
    write(moved, "filename,label", "d00.png,x")
    assert main(["train", "--data", str(folder), "--labels", str(moved), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"digitlab: error: {moved}: line 2: label 'x' is not a class number "
                   "(labels are class numbers 0..999)"]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero and named pipes")
def test_labels_file_that_is_a_device_or_pipe_is_refused_unread(tmp_path, flat) -> None:
    folder, _, _ = flat
    (folder / "labels.csv").unlink()
    (folder / "labels.csv").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="is a character device, not a regular file"):
        read_path(folder)
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=r"is a named pipe \(FIFO\), not a regular file"):
        read_path(folder, labels=pipe)


def test_a_tree_with_a_labels_csv_stays_a_tree(tmp_path, small_splits) -> None:
    images, labels = small_splits["train"]
    for i in range(4):
        (tmp_path / "tree" / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(tmp_path / "tree" / str(labels[i]) / f"{i}.png")
    write(tmp_path / "tree" / "labels.csv", "a,b")  # not a labels file of this tree
    with pytest.warns(DataWarning, match="skipped 1 file"):
        splits = read_path(tmp_path / "tree")
    assert sorted(splits["train"][1].tolist()) == sorted(labels[:4].tolist())
