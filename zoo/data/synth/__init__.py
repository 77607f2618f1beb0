"""Internals of the synthetic microscopy generator (public API: ``zoo.data.synthetic``).

Modules, lowest first: ``kernels`` (numba loops), ``geometry`` (label layouts: ellipses,
rods, buds, processes, division, debris), ``optics`` (noise fields, PSF, defocus, haze,
illumination), ``camera`` (photons to stored pixel values: Poisson-Gaussian noise, offset,
bit depth, saturation, JPEG), ``scene`` (what a renderer returns and the per-style knobs),
then one module per family of styles: ``fluorescence``, ``transmitted``, ``histology``.
"""
