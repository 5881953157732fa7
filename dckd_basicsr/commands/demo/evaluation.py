"""Scoring the demo's runs on the held-out photos with BasicSR's metrics, and reading their validation curves."""
import os
from os import path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from dckd_basicsr.integration.training_log import parse_validations, run_logs
from dckd_basicsr.options import read_option_file


def read_validation_curves(experiment: str) -> List[Tuple[int, float]]:
    """``[(iter, PSNR), ...]`` of a run's validations, from its BasicSR logs (oldest first; a later validation at the
    same iteration, such as BasicSR's final one, replaces the earlier)."""
    points: Dict[int, float] = {}
    for log_path in run_logs(experiment):
        with open(log_path) as f:
            for record in parse_validations(f):
                if record['iter'] is not None and 'psnr' in record['metrics']:
                    points[record['iter']] = record['metrics']['psnr']
    return sorted(points.items())


def load_run_network(experiment: str):
    """The run's generator (EMA weights when saved) built from the option file BasicSR copied into the run."""
    import torch
    from basicsr.archs import build_network
    opt_files = [f for f in os.listdir(experiment) if f.endswith('.yml')]
    opt = read_option_file(osp.join(experiment, opt_files[0]))
    net = build_network(opt['network_g'])
    checkpoint = torch.load(osp.join(experiment, 'models', 'net_g_latest.pth'), map_location='cpu', weights_only=True)
    net.load_state_dict(checkpoint.get('params_ema', checkpoint['params']))
    return net.eval()


def parameter_count(experiment: str) -> int:
    """Parameters of the run's generator."""
    from dckd_basicsr.archs.arch_util import count_parameters
    return count_parameters(load_run_network(experiment))


def evaluate(runs: Dict[str, str], test_dir: str, scale: int, device: str) -> Dict[str, Dict[str, object]]:
    """PSNR/SSIM (Y channel, border = scale, BasicSR's metrics) of bicubic and each run on the held-out photos."""
    import torch
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.matlab_functions import imresize

    torch_device = torch.device('cuda' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
                                else 'cpu')
    hr_dir, lr_dir = osp.join(test_dir, 'HR'), osp.join(test_dir, 'LR_bicubic', f'X{scale}')
    names = sorted(osp.splitext(f)[0] for f in os.listdir(hr_dir) if f.endswith('.png'))
    networks = {label: load_run_network(path).to(torch_device) for label, path in runs.items()}
    results = {label: {'psnr': [], 'ssim': [], 'images': {}} for label in ['Bicubic'] + list(runs)}
    for name in names:
        lq = cv2.imread(osp.join(lr_dir, f'{name}x{scale}.png'), cv2.IMREAD_COLOR)
        gt = cv2.imread(osp.join(hr_dir, f'{name}.png'), cv2.IMREAD_COLOR)
        gt = gt[:lq.shape[0] * scale, :lq.shape[1] * scale]
        outputs = {'Bicubic': np.clip(np.round(imresize(lq.astype(np.float64) / 255., scale) * 255.), 0,
                                      255).astype(np.uint8)}
        lq_tensor = img2tensor(lq.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None].to(torch_device)
        with torch.no_grad():
            for label, net in networks.items():
                outputs[label] = tensor2img(net(lq_tensor).cpu())
        for label, image in outputs.items():
            results[label]['psnr'].append(calculate_psnr(image, gt, crop_border=scale, test_y_channel=True))
            results[label]['ssim'].append(calculate_ssim(image, gt, crop_border=scale, test_y_channel=True))
            results[label]['images'][name] = image
        results.setdefault('HR', {'images': {}})['images'][name] = gt
    for label in ['Bicubic'] + list(runs):
        results[label]['mean_psnr'] = float(np.mean(results[label]['psnr']))
        results[label]['mean_ssim'] = float(np.mean(results[label]['ssim']))
    results['names'] = names
    return results


def figure_photo(results: dict, labels: Sequence[str]) -> int:
    """Index of the photo the figure shows: where the teacher gains most over bicubic (the methods differ most)."""
    reference = 'Teacher' if 'Teacher' in labels else labels[-1]
    return int(np.argmax(np.array(results[reference]['psnr']) - np.array(results['Bicubic']['psnr'])))
