"""The numbers of Zhou et al., AAAI 2025 (DCKD, arXiv 2412.08939) that ``dckd-results`` prints next to a run's, and
the names of the paper's datasets, methods and backbones in the order its tables list them."""
from typing import Dict, Optional, Sequence, Tuple

Metrics = Tuple[Optional[float], Optional[float]]  # (PSNR, SSIM); None where the paper gives none

SR_DATASETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')
DEBLUR_DATASETS = ('GoPro', )
DERAIN_DATASETS = ('Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200')
METHODS = ('Teacher', 'Scratch', 'Logits', 'FAKD', 'MiPKD', 'DUKD', 'DCR only', 'DMM only', 'DCKD', 'DCKD*',
           'DCKD (Eq. 9)')
BACKBONES = ('SwinIR', 'RCAN', 'NAFNet', 'Restormer', 'EDSR')


def _row(datasets: Sequence[str], values: Sequence[Metrics]) -> Dict[str, Metrics]:
    return dict(zip(datasets, values))


# The paper's numbers (Zhou et al., AAAI 2025, arXiv 2412.08939): Table 2 (SR, Y channel),
# Table 3 (GoPro, RGB), Table 4 (deraining, Y) and the RCAN x2 Urban100 ablation (PSNR only).
# Keys: (backbone, task, scale) -> method -> dataset -> (PSNR, SSIM).
_SR4 = SR_DATASETS[:4]
PAPER_RESULTS: Dict[Tuple[str, str, int], Dict[str, Dict[str, Metrics]]] = {
    ('SwinIR', 'SR', 4): {
        'Teacher': _row(_SR4, [(32.72, .9021), (28.94, .7914), (27.83, .7459), (27.07, .8164)]),
        'Scratch': _row(_SR4, [(32.31, .8955), (28.67, .7833), (27.61, .7379), (26.15, .7884)]),
        'Logits': _row(_SR4, [(32.27, .8954), (28.67, .7833), (27.62, .7380), (26.15, .7887)]),
        'FAKD': _row(_SR4, [(32.22, .8950), (28.65, .7831), (27.61, .7380), (26.09, .7870)]),
        'MiPKD': _row(_SR4, [(32.39, .8971), (28.76, .7854), (27.68, .7403), (26.37, .7956)]),
        'DCKD': _row(_SR4, [(32.49, .8991), (28.82, .7877), (27.72, .7422), (26.53, .8007)]),
        'DCKD*': _row(_SR4, [(32.51, .8992), (28.88, .7890), (27.74, .7430), (26.62, .8032)]),
    },
    ('RCAN', 'SR', 4): {
        'Teacher': _row(_SR4, [(32.63, .9002), (28.87, .7889), (27.77, .7436), (26.82, .8087)]),
        'Scratch': _row(_SR4, [(32.38, .8971), (28.69, .7842), (27.63, .7379), (26.36, .7947)]),
        'Logits': _row(_SR4, [(32.45, .8980), (28.76, .7860), (27.67, .7400), (26.49, .7982)]),
        'DCKD': _row(_SR4, [(32.56, .8995), (28.82, .7877), (27.73, .7423), (26.69, .8041)]),
        'DCKD*': _row(_SR4, [(32.58, .8996), (28.86, .7885), (27.74, .7425), (26.74, .8054)]),
    },
    ('SwinIR', 'SR', 2): {
        'DCKD': _row(_SR4, [(38.17, .9613), (33.85, .9205), (32.31, .9017), (32.59, .9330)]),
    },
    ('RCAN', 'SR', 2): {
        'Logits': {'Urban100': (32.67, None)},
        'DCR only': {'Urban100': (32.83, None)},
        'DMM only': {'Urban100': (32.81, None)},
        'DCKD': _row(_SR4, [(38.25, .9615), (34.01, .9213), (32.35, .9019), (32.92, .9351)]),
    },
    ('NAFNet', 'Deblur', 1): {
        'Teacher': {'GoPro': (32.87, .9606)},
        'Scratch': {'GoPro': (31.17, .9457)},
        'Logits': {'GoPro': (31.26, .9464)},
        'DCKD': {'GoPro': (31.43, .9487)},
    },
    ('Restormer', 'Deblur', 1): {
        'Teacher': {'GoPro': (32.92, .9610)},
        'Scratch': {'GoPro': (31.57, .9497)},
        'Logits': {'GoPro': (31.61, .9501)},
        'DCKD': {'GoPro': (31.78, .9521)},
    },
    ('Restormer', 'Derain', 1): {
        'Logits': {'Rain100L': (37.17, .9712)},
        'DCKD': {'Rain100L': (38.02, .9762)},
    },
}
