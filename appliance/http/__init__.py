"""The cache over HTTP: title downloads through sendfile, HLS playlists.

Pure rules (``ranges``, ``conditional``, ``playlist``) are sans-IO; the
Twisted Web resources (``download``, ``site``) and the sendfile producer
(``sendfile_body``) are the thin edge around them.
"""
