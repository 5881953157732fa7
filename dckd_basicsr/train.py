"""Train with BasicSR's pipeline and the plugin: ``python -m dckd_basicsr.train -opt X.yml``, ``dckd-train -opt X.yml``
or ``python dckd_basicsr/train.py -opt X.yml``. Accepts BasicSR's flags (``--launcher``, ``--auto_resume``,
``--debug``, ``--force_yml``)."""
from dckd_basicsr.entry import run_pipeline


def main() -> None:
    run_pipeline('basicsr.train', 'train_pipeline')


if __name__ == '__main__':
    main()
