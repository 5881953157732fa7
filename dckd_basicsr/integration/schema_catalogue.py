"""The catalogue of the option schema: the type, default and one-line description of every key BasicSR 1.4.2 and the
plugin read in the top level, ``path``, ``train``, ``val``, ``logger``, ``dist_params`` and a dataset block, and the
nested blocks the plugin adds (``train.fast``, ``train.noisy``, ``train.dukd_opt``).

Which of these keys a given option file may use is decided by the code that reads them (:mod:`.schema_blocks`,
:mod:`.schema_sources`), except for the keys the plugin reads outside the model classes, declared here with the models
that read them (``models=``) and collected by :func:`plugin_reads`.
"""
import functools
from typing import Any, Dict, Tuple

from dckd_basicsr.integration.option_schema import Block, Field
from dckd_basicsr.integration.schema_sources import REQUIRED

# Types and one-line descriptions of the keys BasicSR and the plugin read, by block. Which of them a given option file
# may use is decided by the code that reads them (see the module docstring), except for PLUGIN_READS.


def F(kind: str = 'any', default: Any = None, description: str = '', **kwargs: Any) -> Field:  # noqa: N802
    return Field(kind, default, description, **kwargs)


TOP = {
    'name': F('str', REQUIRED, 'run name: experiments/<name> (training) or results/<name> (testing)'),
    'model_type': F('str', REQUIRED, 'the model class (MODEL_REGISTRY): SRModel, SwinIRModel, KDModel, DCKDModel, '
                    'DUKDModel, ...'),
    'scale': F('int', 1, 'upscaling factor of the data; copied into every dataset block'),
    'num_gpu': F('int|str', REQUIRED, 'GPUs to use: 0 for CPU, auto for all visible ones', choices=('auto', )),
    'manual_seed': F('int', None, 'random seed (BasicSR draws one when not set)'),
    'find_unused_parameters': F('bool', False, "DDP's find_unused_parameters for network_g"),
    'datasets': F('dict', REQUIRED, 'one block per phase: train, val_1, val_2, ... (testing: test_1, test_2, ...)'),
    'path': F('dict', None, 'checkpoint files to load, resume state, run folders'),
    'train': F('dict', None, 'training settings: losses (*_opt), optimizer, schedule, EMA'),
    'val': F('dict', None, 'validation during training (and testing): frequency, metrics, saved images'),
    'logger': F('dict', None, 'console/log, checkpoint and TensorBoard/wandb settings'),
    'dist_params': F('dict', None, "distributed settings: BasicSR's slurm launcher and the collective timeout"),
    'network_g': F('dict', REQUIRED, 'the network being trained (the student): an arch of ARCH_REGISTRY and its '
                   'arguments'),
    'network_d': F('dict', None, 'the discriminator of GAN models: an arch and its arguments'),
    'network_t': F('dict', REQUIRED, 'the frozen teacher: an arch and its arguments, or type: SpandrelTeacher (built '
                   'from path.pretrain_network_t by spandrel)', for_training=True),
    'network_vqgan': F('dict', None, "the frozen VQGAN encoder of DCKD's cl_opt / ce_opt (type: VQGAN, embed_dim, "
                       'n_embed, ddconfig)'),
    'network_his': F('bool|dict', True, "DCKD's history model (a copy of network_g restoring the negatives); false is "
                     'refused while cl_opt is on'),
    # filled in by BasicSR's parse_options and the plugin
    'dist': F('bool', computed=True), 'rank': F('int', computed=True), 'world_size': F('int', computed=True),
    'auto_resume': F('bool', computed=True), 'is_train': F('bool', computed=True),
    'root_path': F('str', computed=True), 'smoke': F('dict', computed=True),
    'resume_position': F('dict', computed=True),
}

PATH = {
    'resume_state': F('str', None, 'a training state (experiments/<name>/training_states/<iter>.state) to resume '
                      'from; --auto_resume finds the latest'),
    'ignore_resume_networks': F('list', None, 'networks whose pretrain_network_* path a resume keeps (BasicSR would '
                                'point them at the run\'s models folder); the frozen teacher and encoder always are',
                                models=('BaseModel', )),
    'experiments_root': F('str', None, 'the folder training runs go in (default: experiments under the working '
                          'directory)', models=('BaseModel', )),
    'results_root': F('str', None, 'the folder test runs go in (default: results under the working directory)',
                      models=('BaseModel', )),
    'teacher_format': F('str', 'auto', 'converter of the teacher checkpoint (auto, basicsr, state_dict, spandrel, '
                        'official_swinir, ...; dckd-convert --list)', models=('KDModel', )),
    'vqgan_format': F('str', 'auto', 'converter of the VQGAN checkpoint (auto, taming, ...)', models=('DCKDModel', )),
    'models': F('str', computed=True), 'training_states': F('str', computed=True), 'log': F('str', computed=True),
    'visualization': F('str', computed=True),
}
PATH_PATTERNS = (
    (r'pretrain_network_\w+', F('str', None, 'checkpoint of network_<net> (~: random initialisation, students '
                                'only)')),
    (r'param_key_\w+', F('str', 'params', 'key of the weights inside that checkpoint (params, params_ema, ...)')),
    (r'strict_load_\w+', F('bool', True, 'every key of the checkpoint must fit the network')),
    (r'trusted_\w+', F('bool', False, 'allow full unpickling of that checkpoint (runs code stored in it)')),
    (r'format_network_\w+', F('str', 'auto', 'converter of that checkpoint (dckd-convert --list)')),
)

TRAIN = {
    'total_iter': F('count', REQUIRED, 'training iterations', for_training=True),
    'warmup_iter': F('count', -1, 'linear learning-rate warm-up iterations (-1: none)'),
    'ema_decay': F('float', 0, 'decay of the EMA copy of network_g (0: no EMA); validation uses the EMA when on'),
    'optim_g': F('dict', REQUIRED, "network_g's optimizer: type (Adam, AdamW, ...) and its arguments",
                 for_training=True),
    'optim_d': F('dict', None, "the discriminator's optimizer"),
    'scheduler': F('dict', None, 'learning-rate schedule: MultiStepLR (milestones, gamma) or '
                   'CosineAnnealingRestartLR (periods, restart_weights, eta_min)'),
    'pixel_opt': F('dict', None, 'L_rec: a loss between the network output and GT (L1Loss, ...)'),
    'perceptual_opt': F('dict', None, 'perceptual (VGG feature) loss'),
    'gan_opt': F('dict', None, 'adversarial loss of GAN models'),
    'ldl_opt': F('dict', None, 'LDL artifact loss of GAN models'),
    'net_d_iters': F('int', 1, 'discriminator steps per generator step'),
    'net_d_init_iters': F('int', 0, 'iterations that train the discriminator only'),
    # the plugin
    'fast': F('dict', None, 'speed settings, all off by default (exact fp32): amp, autocast, channels_last, compile',
              models=('KDModel', )),
    'max_nonfinite_steps': F('int', 10, 'consecutive steps with a NaN/Inf loss term (each skipped) before training '
                             'stops; 0 never stops', models=('KDModel', )),
    'noisy': F('dict', None, 'label consistency (lcr_opt, DUKD): prob, the probability of each invertible op',
               models=('KDModel', ), top_level=True),
    'logits_opt': F('dict', None, 'L_kd: a loss between the student and teacher outputs'),
    'kd_opt': F('dict', None, "L_kd under DUKD's name (an alias of logits_opt)"),
    'lcr_opt': F('dict', None, "DCKD*'s label consistency: the student vs the teacher on inverted/flipped/transposed "
                 'inputs, mapped back'),
    'fakd_opt': F('dict', None, 'FAKD: spatial affinities of paired feature maps (student_layers, teacher_layers)',
                  top_level=True),
    'cl_opt': F('dict', None, 'DCR, Eq. 5: contrastive loss in the VQGAN encoder features (ContrasLoss)'),
    'ce_opt': F('dict', None, 'DMM, Eq. 9: code distributions of student and teacher (CELoss, '
                'DistributionMappingLoss)'),
    'dukd_opt': F('dict', None, "DUKD's upcycling step: n_gt_sub, zoom_out, zero_grad_between_steps",
                  models=('DUKDModel', )),
    'num_neg': F('int', 4, 'negatives per sample (degraded copies of the LQ input, restored by the history model)',
                 models=('DCKDModel', ), top_level=True),
    'update_decay': F('float', 0.1, 'history model update: his = decay * his + (1 - decay) * student',
                      models=('DCKDModel', ), top_level=True),
    'step': F('list', [1000, 2000, 3000], 'iterations (within each step_span) at which the history model is '
              'updated', models=('DCKDModel', ), top_level=True),
    'step_span': F('int', 100000, 'length of the repeating history-update schedule', models=('DCKDModel', ),
                   top_level=True),
    'gaussian_noise_prob': F('float', 1.0, 'probability of Gaussian noise on a negative', models=('DCKDModel', ),
                             top_level=True),
    'gray_noise_prob': F('float', 0.5, 'probability that the noise of a negative is gray', models=('DCKDModel', ),
                         top_level=True),
    'gaussian_blur_prob': F('float', 0.0, 'probability of Gaussian blur on a negative', models=('DCKDModel', ),
                            top_level=True),
    'resize_prob': F('float', 0.0, 'probability of a random resize (and back) of a negative', models=('DCKDModel', ),
                     top_level=True),
    'resize_up_prob': F('float', 0.25, 'probability that a resize goes up', models=('DCKDModel', ), top_level=True),
    'noise_range': F('list', [1, 30], 'Gaussian noise sigma range (0..255 scale)', models=('DCKDModel', ),
                     top_level=True),
    'blur_kernel_range': F('list', [3, 11], 'odd blur kernel sizes, low and high', models=('DCKDModel', ),
                           top_level=True),
    'blur_sigma': F('list', [0.1, 2.0], 'blur sigma range', models=('DCKDModel', ), top_level=True),
    'resize_up_range': F('list', [1.0, 1.5], 'resize factors up', models=('DCKDModel', ), top_level=True),
    'resize_down_range': F('list', [0.5, 1.0], 'resize factors down', models=('DCKDModel', ), top_level=True),
}
# Keys the plugin used to read and refuses now, with what to do instead.
RETIRED_TRAIN = {key: ("no longer supported; DUKD's zoom-in/zoom-out upcycling is a second optimizer step of its "
                       'own: use model_type: DUKDModel with train.dukd_opt (n_gt_sub, zoom_out).')
                 for key in ('zoom_in_opt', 'zoom_out_opt', 'zoom_out_lq_opt')}

FAST = Block('train.fast', {
    'amp': F('bool|str', False, 'student forward and losses under autocast: bf16 or fp16 (a GradScaler then)',
             choices=('bf16', 'fp16')),
    'autocast': F('bool|str', None, "frozen networks' precision: bf16, fp16 or false (default: amp's)",
                  choices=('bf16', 'fp16')),
    'channels_last': F('bool', False, 'frozen networks in channels_last memory format'),
    'compile': F('bool|str', False, 'torch.compile: true or a mode (default, reduce-overhead, max-autotune, '
                 'max-autotune-no-cudagraphs)'),
    'compile_strict': F('bool', False, 'a network that fails to compile stops the run instead of running eagerly'),
    'negatives_per_pass': F('int', 1, 'DCKD negatives per VQGAN encoder pass (1: least memory)',
                            models=('DCKDModel', )),
})
NOISY = Block('train.noisy', {'prob': F('float', None, 'probability of each invertible op (default 0.5 for lcr_opt, '
                                        '0.3 for DUKD)')})
DUKD = Block('train.dukd_opt', {
    'n_gt_sub': F('int|list', 1, 'zoom-in tiles per GT patch (an int or DUKD\'s one-element list)'),
    'zoom_out': F('bool', False, 'add the zoom-out terms (the LQ downscaled by the scale)'),
    'zero_grad_between_steps': F('bool', False, "zero step 1's gradients before step 2 (DUKD keeps them)"),
})
WANDB = Block('logger.wandb', {'project': F('str', None, 'wandb project (needs use_tb_logger: true)'),
                               'resume_id': F('str', None, 'wandb run id to resume')})
LOGGER = {
    'print_freq': F('count', REQUIRED, 'iterations between log lines', for_training=True),
    'save_checkpoint_freq': F('count', REQUIRED, 'iterations between checkpoints and training states',
                              for_training=True),
    'use_tb_logger': F('bool', False, 'TensorBoard logging in tb_logger/<name>'),
    'wandb': F('dict', None, 'wandb logging: project, resume_id', block=WANDB),
    'save_format': F('str', 'pth', 'file format of saved networks', choices=('pth', 'safetensors')),
    'on_save_failure': F('str', 'stop', "a checkpoint or training state that cannot be written after BasicSR's "
                         'retries: stop (one message naming the file, the OS error and the last complete checkpoint) '
                         "or continue without it (BasicSR's behaviour)", choices=('stop', 'continue')),
}
VAL = {
    'val_freq': F('count', REQUIRED, 'iterations between validations', for_training=True),
    'save_img': F('bool', False, 'write the restored validation images'),
    'suffix': F('str', None, 'suffix of saved images (default: the run name)'),
    'metrics': F('dict', None, 'one block per metric: a METRIC_REGISTRY type and its arguments'),
    'pbar': F('bool', False, 'progress bar during validation'),
    'pad_multiple': F('int', None, 'pad validation inputs (bottom/right, reflect) to this multiple and crop back '
                      '(default: network_g.window_size or 1)', models=('KDModel', )),
    # SwinIRModel pads to network_g.window_size, the value the shipped files repeat here
    'window_size': F('int', None, "the DCKD authors' name of pad_multiple (SwinIRModel pads to network_g.window_size)",
                     models=('KDModel', 'SwinIRModel')),
    'center_frame_only': F('bool', False, 'video models: metrics on the centre frame only'),
    'flip_seq': F('bool', False, 'video models: also run the reversed sequence'),
    'num_val_samples': F('int', 16, 'StyleGAN2: validation samples'),
}
DIST_PARAMS = Block('dist_params', {
    'backend': F('str', 'nccl', "process-group backend of BasicSR's slurm launcher (gloo on CPU)"),
    'port': F('int', None, "master port of BasicSR's slurm launcher"),
    'timeout_s': F('int', 600, 'seconds a collective (gradient all-reduce, ...) waits for every rank before the run '
                   "fails with a message naming this key; must cover rank 0's validation and checkpoint writes, which "
                   'the other ranks wait for'),
})
DATASET = {
    'name': F('str', None, 'name of the set in logs and result folders'),
    'type': F('str', REQUIRED, 'the dataset class (DATASET_REGISTRY): PairedImageDataset, SingleImageDataset, ...'),
    'dataroot_gt': F('str|list', None, 'folder or LMDB of the ground-truth (HR) images'),
    'dataroot_lq': F('str|list', None, 'folder or LMDB of the low-quality (LR) inputs'),
    'meta_info_file': F('str', None, 'text file listing the images to use (one per line)'),
    'meta_info': F('str', None, 'text file listing the images to use'),
    'filename_tmpl': F('str', '{}', "LQ file name from the GT name without extension: '{}x4' for woman.png -> "
                       'womanx4.png'),
    'io_backend': F('dict', REQUIRED, 'how images are read: type disk (folders) or lmdb'),
    'gt_size': F('int', None, 'training GT patch size (the LQ patch is gt_size / scale)'),
    'use_hflip': F('bool', None, 'random horizontal flips (training)'),
    'use_rot': F('bool', None, 'random 90-degree rotations and vertical flips (training)'),
    'mean': F('list', None, 'per-channel mean subtracted from the images'),
    'std': F('list', None, 'per-channel std the images are divided by'),
    'color': F('str', None, 'y: train and validate on the Y channel', choices=('y', )),
    'batch_size_per_gpu': F('int', None, 'training batch size per GPU (or per process on CPU)'),
    'num_worker_per_gpu': F('int', None, 'DataLoader workers per GPU (capped at the CPUs this process may use)'),
    'use_shuffle': F('bool', True, 'shuffle the training set'),
    'pin_memory': F('bool', False, "DataLoader's pin_memory"),
    'persistent_workers': F('bool', False, "DataLoader's persistent_workers"),
    'prefetch_mode': F('str', None, 'prefetching: cpu or cuda (needs a GPU and pin_memory: true)',
                       choices=('cpu', 'cuda')),
    'num_prefetch_queue': F('int', 1, 'prefetch queue length'),
    'dataset_enlarge_ratio': F('int', 1, 'repeat the training set this many times per epoch'),
    'phase': F('str', computed=True), 'scale': F('int', computed=True),
}
# Dataset keys the plugin reads outside the dataset classes (every dataset type accepts them).
PLUGIN_DATASET = {
    'gt_sizes': F('list', None, "Restormer's progressive patches: GT patch size of each stage"),
    'mini_batch_sizes': F('list', None, "Restormer's progressive patches: batch size of each stage"),
    'iters': F('list', None, "Restormer's progressive patches: iterations of each stage"),
    'max_bad_samples': F('int', 0, 'samples whose image cannot be decoded that training skips (one warning each) '
                         'before it fails; 0 fails at the first'),
}
SECTIONS = {'': TOP, 'path': PATH, 'train': TRAIN, 'val': VAL, 'logger': LOGGER}
# How the code names each block (ast.unparse, single quotes), for keys_read.
CONTAINERS = {
    '': ('opt', 'self.opt'),
    'path': ("opt['path']", "self.opt['path']", 'path_opt'),
    'train': ("opt['train']", "self.opt['train']", 'train_opt'),
    'val': ("opt['val']", "self.opt['val']", 'val_opt'),
    'logger': ("opt['logger']", "self.opt['logger']", 'logger_opt'),
}
DATASET_CONTAINERS = ('opt', 'self.opt', 'dataset_opt', "opt['datasets']['train']")
NESTED = {('train', 'fast'): FAST, ('train', 'noisy'): NOISY, ('', 'noisy'): NOISY, ('train', 'dukd_opt'): DUKD,
          ('', 'dist_params'): DIST_PARAMS}


@functools.lru_cache(maxsize=None)
def plugin_reads() -> Dict[str, Dict[str, Tuple[str, ...]]]:
    """``{section: {key: models}}``: the keys the plugin reads outside the model classes (declared with ``models``
    in the catalogue), and every model's ``LOSS_TERMS`` blocks."""
    from basicsr.utils.registry import MODEL_REGISTRY
    reads = {section: {key: f.models for key, f in fields.items() if f.models} for section, fields in SECTIONS.items()}
    reads['logger'].update((key, ('BaseModel', )) for key in ('save_format', 'on_save_failure'))
    for name, cls in MODEL_REGISTRY:
        for term in getattr(cls, 'LOSS_TERMS', ()):
            owner = next(k.__name__ for k in reversed(cls.__mro__) if term in getattr(k, 'LOSS_TERMS', ()))
            for key in (term.option, *term.aliases):
                reads['train'].setdefault(key, (owner, ))
    return reads


