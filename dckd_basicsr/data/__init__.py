"""BasicSR's data layer as the plugin extends it: an image that cannot be decoded is an error naming the file or LMDB
record (:mod:`.decoding`), and a training run fails on it, or skips up to ``datasets.<phase>.max_bad_samples`` such
samples (:mod:`.bad_samples`)."""
