"""Test with BasicSR's pipeline and the plugin: ``dckd-test -opt X.yml``, ``python -m dckd_basicsr.test -opt X.yml``
or ``python dckd_basicsr/test.py -opt X.yml``. Benchmark sets whose folders are missing are skipped with a message;
``--help`` lists the flags."""
from dckd_basicsr.integration.entry_points import run_pipeline


def main() -> None:
    run_pipeline('basicsr.test', 'test_pipeline', prog='dckd-test')


if __name__ == '__main__':
    main()
