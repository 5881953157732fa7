"""Decoding the bytes BasicSR's datasets read: bytes that are not an image raise :class:`UndecodableImageError`, and
the file client remembers what it read last, so the error can name the file or the LMDB record.

BasicSR's ``imfrombytes`` returns None for bytes OpenCV cannot decode (a truncated PNG, a record that is not an image)
and then fails in ``None.astype`` deep inside the dataset, naming nothing; with ``float32=False`` it returns None
silently. :func:`imfrombytes` and :func:`remember_reads` are installed by
:func:`dckd_basicsr.integration.patches.patch_imfrombytes` and
:func:`~dckd_basicsr.integration.patches.patch_file_client_get`.
"""
from typing import Any, Callable

import numpy as np


class UndecodableImageError(ValueError):
    """Bytes a dataset read that are not an image (raised by :func:`imfrombytes`)."""


def imfrombytes(original: Callable) -> Callable:
    """BasicSR's ``imfrombytes(content, flag, float32)`` that raises :class:`UndecodableImageError` instead of
    returning None (or failing on it); a decodable image gives the same array as BasicSR's."""

    def decode(content, flag='color', float32=False):
        if content is None or len(content) == 0:
            raise UndecodableImageError('no bytes (a key missing from the LMDB, or an empty file)')
        img = original(content, flag, float32=False)
        if img is None:
            raise UndecodableImageError(f'{len(content)} bytes that OpenCV cannot decode as an image (corrupt or '
                                        'truncated)')
        if float32:
            img = img.astype(np.float32) / 255.
        return img

    decode.__doc__ = original.__doc__
    decode.__wrapped__ = original
    return decode


def remember_reads(original: Callable) -> Callable:
    """``FileClient.get`` that records ``(filepath, client_key)`` of its last read as ``last_read``."""

    def get(self, filepath, client_key='default'):
        self.last_read = (filepath, client_key)
        return original(self, filepath, client_key)

    get.__doc__ = original.__doc__
    get.__wrapped__ = original
    return get


def last_read(dataset: Any) -> str:
    """What ``dataset``'s file client read last: ``LMDB <path>, key <key>`` or ``file <path>``."""
    client = getattr(dataset, 'file_client', None)
    read = getattr(client, 'last_read', None)
    if read is None:
        return 'the image it read last'
    filepath, client_key = read
    if client.backend == 'lmdb':
        backend = client.client
        keys = list(backend._client)
        db_path = backend.db_paths[keys.index(client_key)] if client_key in keys else client_key
        return f'LMDB {db_path}, key {filepath}'
    return f'file {filepath}'
