"""Train with BasicSR's pipeline and the plugin: ``dckd-train -opt X.yml``, ``python -m dckd_basicsr.train -opt X.yml``
or ``python dckd_basicsr/train.py -opt X.yml``. Accepts BasicSR's flags (``--launcher``, ``--auto_resume``,
``--debug``, ``--force_yml``) and ``--smoke`` / ``--stand-in`` (:mod:`dckd_basicsr.integration.smoke`); ``--help``
lists them."""
from dckd_basicsr.integration.entry_points import run_pipeline


def main() -> None:
    run_pipeline('basicsr.train', 'train_pipeline', prog='dckd-train')


if __name__ == '__main__':
    main()
