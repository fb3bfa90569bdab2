"""Placeholder: being written (read_image_tree, write_image_tree, decode_image)."""

from pathlib import Path


def read_image_tree(root: Path) -> dict:
    raise NotImplementedError
