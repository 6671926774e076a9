"""LDPv2's pool is MobileVLM's AdaptiveAvgPool2d: a 2x2 average pool on even grids only (its docstring said so of
every grid)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.projectors import build_projector


def _pooled(side: int, pooled_grid=None) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    m = build_projector("ldpv2", 4, 8, pooled_grid=pooled_grid).eval()
    x = torch.randn(1, side * side, 4)
    grid = m.mlp(x).transpose(1, 2).reshape(1, 8, side, side)
    return m.dwn(grid), grid


def test_even_grid_default_pool_is_a_2x2_average_pool():
    pooled, grid = _pooled(6)
    torch.testing.assert_close(pooled, F.avg_pool2d(grid, 2))


def test_odd_grid_default_pool_is_adaptive_not_2x2():
    pooled, grid = _pooled(5)
    assert pooled.shape[-2:] == (2, 2)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(grid, (2, 2)))
    assert not torch.allclose(pooled, F.avg_pool2d(grid, 2))  # windows 0..2 and 2..4: the middle row counts twice


def test_a_pooled_grid_larger_than_the_grid_repeats_cells_as_mobilevlm():
    pooled, grid = _pooled(3, pooled_grid=6)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(grid, (6, 6)))
    torch.testing.assert_close(pooled[..., ::2, ::2], grid)
