"""Scripts that turn downloaded datasets into the layouts the option files expect (see ``datasets_prep/README.md``).

Each ``prepare_*.py`` runs as ``python datasets_prep/<script>.py ...`` from the repository root and exposes
``main(argv=None)`` for the demo and the tests. Each runs the same four steps:

1. **Plan.** List the input images, read their sizes from the file headers and work out every entry each output must
   hold (LMDB key or file name, height, width). Bad input (missing or empty folder, a file that is not an image, a
   missing partner, mismatched sizes, an image smaller than the crop) is reported here, naming the file, before
   anything is written.
2. **Skip what is done.** An output whose entries already match the plan is left untouched, so a re-run is a no-op.
   One that exists but differs is an error unless ``--overwrite`` is given.
3. **Build.** A process pool decodes each input image once and returns PNG bytes for every output that needs them;
   the main process streams them into a temporary LMDB (BasicSR's :class:`~basicsr.utils.lmdb_util.LmdbMaker`) or a
   temporary folder, renamed into place only when complete. An interrupted or failed run leaves no output that looks
   complete, and never a half-overwritten one.
4. **Verify** every output (keys, counts, sizes, LR x scale = HR, a sample read through BasicSR's
   ``PairedImageDataset``) and print a one-screen summary.

Sub-images follow BasicSR's ``extract_subimages`` recipe (:func:`~datasets_prep.sub_images.crop_starts`) and LMDBs
hold exactly what ``make_lmdb_from_imgs`` would store for those sub-images saved as PNG files: the decoded pixels
re-encoded as PNG with ``compress_level``, keys without extension and a ``meta_info.txt`` sorted by file name.

The shared machinery, one module per job: :mod:`.images` (listing, decoding, PNG records, MATLAB bicubic),
:mod:`.sub_images` (where sub-images lie), :mod:`.outputs` (one LMDB or folder being written), :mod:`.build` (the
process pool that fills the outputs), :mod:`.verify` (reading outputs back through ``PairedImageDataset``),
:mod:`.pairs` (paired input/target folders) and :mod:`.cli` (shared arguments and the summary).
"""
