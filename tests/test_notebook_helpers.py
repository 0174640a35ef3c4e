"""What the notebooks call instead of defining it themselves: the tutorial's toy embeddings and labelled tables,
against values written out or computed independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fnac_lab import analysis

AXES = {"dog": 0, "car": 1, "piano": 2, "background": 3}


def test_unit_vector_is_the_nudged_axis_normalised():
    assert analysis.unit_vector("piano", axes=AXES).tolist() == [0.0, 0.0, 1.0, 0.0]
    v = analysis.unit_vector("dog", axes=AXES, extra=[(1, 0.2)])
    assert v.dtype == torch.float64
    assert v.tolist() == pytest.approx([1 / math.sqrt(1.04), 0.2 / math.sqrt(1.04), 0.0, 0.0], abs=1e-15)
    w = analysis.unit_vector("car", axes=AXES, extra=[(0, 0.2), (3, -0.1), (0, 0.1)])
    norm = math.sqrt(0.3 ** 2 + 1 + 0.1 ** 2)
    assert w.tolist() == pytest.approx([0.3 / norm, 1 / norm, 0.0, -0.1 / norm], abs=1e-15)


def test_toy_frame_cells_are_the_hand_written_vectors():
    frame = analysis.toy_frame({(0, 1): "car", (1, 0): "dog"}, axes=AXES)
    assert frame.shape == (4, 2, 2) and frame.dtype == torch.float64
    nudged = math.sqrt(1 + 0.3 ** 2)
    expected = {(0, 0): [0, 0, 0, 1], (0, 1): [0, 1 / nudged, 0, 0.3 / nudged],
                (1, 0): [1 / nudged, 0, 0, 0.3 / nudged], (1, 1): [0, 0, 0, 1]}
    for (r, c), cell in expected.items():
        assert frame[:, r, c].tolist() == pytest.approx(cell, abs=1e-15), (r, c)
    big = analysis.toy_frame({(2, 0): "piano"}, axes=AXES, nudge=0.5, size=3)
    assert big.shape == (4, 3, 3)
    assert big[:, 2, 0].tolist() == pytest.approx([0, 0, 1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25)], abs=1e-15)
    assert int((big[3] == 1.0).sum()) == 8  # every other cell is background


def test_labelled_table_rounds_like_numpy_and_labels_rows_and_columns():
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    matrix.data[0, 0] = -0.0001  # rounds to -0.0, shown as 0.0
    table = analysis.labelled_table(matrix, rows=["a", "b", "c"], cols=["w", "x", "y", "z"])
    assert list(table.index) == ["a", "b", "c"] and list(table.columns) == ["w", "x", "y", "z"]
    expected = np.round(matrix.detach().numpy(), 3)
    assert np.array_equal(table.to_numpy(), expected)
    assert not np.signbit(table.loc["a", "w"])
    square = analysis.labelled_table([[0.12345, 2], [3, 4.5555]], rows=["p", "q"], decimals=1)
    assert list(square.columns) == ["p", "q"]
    assert square.to_numpy().tolist() == [[0.1, 2.0], [3.0, 4.6]]
