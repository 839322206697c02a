"""Fragmented MP4 (ISO BMFF) for HLS, built from a progressive MP4's own
sample tables: ``boxes`` writes the boxes, ``samples`` expands a track's
tables into per-sample columns, ``init_segment`` makes the ``ftyp`` +
``moov`` a player starts with, ``fragments`` cuts the title into segments
and lays each one out as a small ``moof`` + ``mdat`` header built in
memory followed by byte ranges of the cached file.

Pure: bytes and tables in, bytes and file ranges out. The Twisted side is
``appliance.http.hls_fmp4``.
"""
