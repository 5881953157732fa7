"""``summary.md``: the demo's numbers, the verdict and the encoder caveat."""
import argparse
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from dckd_basicsr.commands.demo.evaluation import figure_photo


def write_summary(results: dict, labels: Sequence[str], args: argparse.Namespace, sizes: Dict[str, int],
                  iters: Dict[str, int], seconds: float, path: str,
                  curves: Optional[Dict[str, List[Tuple[int, float]]]] = None,
                  crop_psnr: Optional[Dict[str, float]] = None) -> str:
    """``summary.md``: mean PSNR/SSIM per method, PSNR per held-out photo, the students' validation PSNR at each
    validation, the figure's crop PSNRs, the verdict and the encoder caveat. Returns its text."""
    lines = [f'# dckd-demo summary (x{args.scale}, seed {args.seed}{", --fast" if args.fast else ""})', '']
    lines.append('| method | params | iterations | PSNR (Y) | SSIM (Y) |')
    lines.append('|---|---|---|---|---|')
    for label in ['Bicubic'] + list(labels):
        size = f'{sizes[label] / 1e3:.1f}k' if label in sizes else '-'
        steps = str(iters.get(label, '-'))
        lines.append(f"| {label} | {size} | {steps} | {results[label]['mean_psnr']:.2f} | "
                     f"{results[label]['mean_ssim']:.4f} |")
    lines += ['', f"Held-out photos: {', '.join(results['names'])} (not used for training).", '']
    methods = ['Bicubic'] + list(labels)
    lines += ['PSNR (Y, dB) per photo:', '', '| photo | ' + ' | '.join(methods) + ' |',
              '|---|' + '---|' * len(methods)]
    for index, name in enumerate(results['names']):
        lines.append(f'| {name} | ' + ' | '.join(f"{results[m]['psnr'][index]:.2f}" for m in methods) + ' |')
    lines.append('')
    if curves and any(curves.values()):
        steps = sorted({step for points in curves.values() for step, _ in points})
        lines += ['Validation PSNR (Y, dB) of the students during training (the figure\'s lower panel):', '',
                  '| iteration | ' + ' | '.join(curves) + ' |', '|---|' + '---|' * len(curves)]
        for step in steps:
            values = [dict(points).get(step) for points in curves.values()]
            lines.append(f'| {step} | ' + ' | '.join('-' if v is None else f'{v:.2f}' for v in values) + ' |')
        lines.append('')
    if crop_psnr:
        photo = results['names'][figure_photo(results, labels)]
        lines += [f"comparison.png shows a centre crop of '{photo}'; each crop's label is the PSNR (Y) of that crop "
                  'alone: ' + ', '.join(f'{label} {value:.2f} dB' for label, value in crop_psnr.items()) + '.', '']
    dckd, logits = results['DCKD']['mean_psnr'], results['Logits']['mean_psnr']
    verdict = 'beats' if dckd > logits else 'does not beat'
    sentence = (f'At this scale DCKD {verdict} logits KD: {dckd:.2f} dB against {logits:.2f} dB '
                f'({dckd - logits:+.2f} dB).')
    if abs(dckd - logits) < 0.1:
        sentence += ' A difference this small at demo size is within seed-to-seed noise (see benchmarks/RESULTS.md).'
    lines.append(sentence)
    if args.vqgan:
        lines.append(f'The VQGAN encoder is the pre-trained checkpoint {args.vqgan}.')
    else:
        lines.append('Caveat: no pre-trained VQGAN was given (--vqgan PATH), so the DCKD run used a small, randomly '
                     'initialised VQGAN encoder. Its features and codebook carry no learned image statistics, so '
                     'this run exercises the whole DCKD pipeline but not the paper\'s setting.')
    lines += ['', f'Total time: {seconds / 60:.1f} min. Runs: {osp.join(args.out, "experiments")}.', '']
    text = '\n'.join(lines)
    with open(path, 'w') as f:
        f.write(text)
    return text
