"""Placeholder: being written (fetch_mnist, fashion_mnist_folder)."""

from pathlib import Path


def fetch_mnist() -> Path:
    raise NotImplementedError


def fashion_mnist_folder() -> Path:
    raise NotImplementedError
