"""Applications built on the cnncore library: the ``cnncore`` command (:mod:`.cli`), the
benchmark suites (:mod:`.bench`) and the plots (:mod:`.viz`).

Apps import the library; the library never imports an app.  The old homes
:mod:`cnncore.cli`, :mod:`cnncore.bench` and :mod:`cnncore.viz` re-export these modules.
"""
