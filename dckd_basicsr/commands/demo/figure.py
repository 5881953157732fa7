"""``comparison.png``: the same centre crop of one held-out photo from every method, each labelled with that crop's
PSNR, above the students' validation PSNR against iterations; drawn with matplotlib's Agg backend (no display)."""
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

from dckd_basicsr.commands.demo.evaluation import figure_photo

COLOURS = {'Scratch': '#c82828', 'Logits': '#28a028', 'DCKD': '#1450c8'}
DPI = 128  # a power of two: pixel sizes divided by it and multiplied back are exact
TITLE_PX, MARGIN_PX, LABEL_PX, CURVES_PX = 26, 4, 22, 260


def _fitting_size(text: str, width_px: float, largest: float) -> float:
    """A font size (points) at which ``text`` fits in ``width_px`` pixels (about 0.6 em per character)."""
    return min(largest, width_px / (0.6 * len(text) * DPI / 72))


def _plot_curves(ax, curves: Dict[str, List[Tuple[int, float]]], width_px: float) -> None:
    """Validation PSNR (Y, on the held-out photos) of each student against iterations."""
    title = 'students: validation PSNR (Y, dB) on the held-out photos vs iteration'
    ax.set_title(title, fontsize=_fitting_size(title, width_px, 6.5))
    ax.tick_params(labelsize=5.5)
    ax.set_xlabel('iteration', fontsize=6, labelpad=1)
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.ticklabel_format(axis='y', useOffset=False)
    for method, points in curves.items():
        points = [(step, value) for step, value in points if math.isfinite(value)]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker='o', markersize=2.5, linewidth=1.2, color=COLOURS.get(method, 'black'),
                    label=f'{method} {values[-1]:.2f}')
    if ax.lines:
        ax.legend(fontsize=6, loc='best', framealpha=0.8)


def draw_comparison(results: dict, labels: Sequence[str], curves: Dict[str, List[Tuple[int, float]]], path: str,
                    crop: int = 96) -> Dict[str, float]:
    """The same centre crop of one held-out photo (:func:`figure_photo`, named in the figure) from every method,
    each labelled with the PSNR (Y) of that crop, above the students' validation PSNR against iterations.
    Returns the crops' PSNRs."""
    from basicsr.metrics import calculate_psnr
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    index = figure_photo(results, labels)
    name = results['names'][index]
    gt = results['HR']['images'][name]
    crop = min(crop, gt.shape[0], gt.shape[1])
    y, x = (gt.shape[0] - crop) // 2, (gt.shape[1] - crop) // 2
    gt_crop = gt[y:y + crop, x:x + crop]
    tiles = [('HR', gt_crop)]
    crop_psnr = {}
    for label in labels:
        image = results[label]['images'][name][y:y + crop, x:x + crop]
        crop_psnr[label] = float(calculate_psnr(image, gt_crop, crop_border=0, test_y_channel=True))
        tiles.append((f'{label} {crop_psnr[label]:.2f} dB', image))

    tile_px = 2 * crop + 2 * MARGIN_PX  # each crop shown at twice its size
    width, height = len(tiles) * tile_px, TITLE_PX + tile_px + LABEL_PX + CURVES_PX
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor='white')
    FigureCanvasAgg(figure)
    title = (f"photo '{name}' ({gt.shape[1]}x{gt.shape[0]}), centre crop {crop}x{crop} shown 2x; dB = PSNR (Y) of "
             'each crop against the HR crop')
    figure.text(6 / width, 1 - TITLE_PX / 2 / height, title, va='center', fontsize=_fitting_size(title, width - 12, 7))
    top = height - TITLE_PX
    for column, (text, image) in enumerate(tiles):
        ax = figure.add_axes(((column * tile_px + MARGIN_PX) / width, (top - MARGIN_PX - 2 * crop) / height,
                              2 * crop / width, 2 * crop / height))
        ax.imshow(np.ascontiguousarray(image[..., ::-1]), interpolation='nearest')  # BGR -> RGB
        ax.set_axis_off()
        ax.text(0, -(MARGIN_PX + LABEL_PX / 2) / (2 * crop), text, transform=ax.transAxes, va='center', fontsize=6.5)
    curves_ax = figure.add_axes((52 / width, 34 / height, (width - 64) / width, (CURVES_PX - 58) / height))
    _plot_curves(curves_ax, curves, width - 12)
    figure.savefig(path, dpi=DPI)
    return crop_psnr
