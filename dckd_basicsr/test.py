"""Test with BasicSR's pipeline and the plugin: ``python -m dckd_basicsr.test -opt X.yml``, ``dckd-test -opt X.yml``
or ``python dckd_basicsr/test.py -opt X.yml``."""
from dckd_basicsr.entry import run_pipeline


def main() -> None:
    run_pipeline('basicsr.test', 'test_pipeline')


if __name__ == '__main__':
    main()
