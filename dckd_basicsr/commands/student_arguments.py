"""The command-line arguments that say which trained network to load (``dckd-infer``, ``dckd-export``)."""
import argparse


def add_student_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``-opt`` and ``--network``: what :func:`dckd_basicsr.checkpoints.students.load_student` needs."""
    parser.add_argument('--model', required=True, help='checkpoint, e.g. experiments/<name>/models/net_g_latest.pth')
    parser.add_argument('-opt', help='option file whose network block builds the network (default: detected)')
    parser.add_argument('--network', default='network_g', help='network block of -opt (default: network_g)')
