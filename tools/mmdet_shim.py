"""Run real mmdet 2.17 / mmcv 1.3.17 "lite" on CPU with torchvision kernels (docs/ORACLES.md).

mmcv-lite ships all of its Python ops (`mmcv/ops/*.py`) but none of the compiled kernels: each ops
module fetches them at import time with `mmcv.utils.ext_loader.load_ext('_ext', [names])`. Import
this module BEFORE anything imports `mmcv.ops` or `mmdet`: it replaces `load_ext` with a loader
whose kernels are torchvision's, so that mmcv's own Python code around them (the offset-trick
`batched_nms`, the `RoIAlignFunction` autograd Function, `BitmapMasks.crop_and_resize` for the
mask targets) runs unchanged.

Shimmed kernels (mmcv 1.3.17 signatures):
  nms(boxes, scores, iou_threshold, offset)            -> torchvision.ops.nms (offset 0 only)
  roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width,
                    spatial_scale, sampling_ratio, pool_mode, aligned)
                                                       -> torchvision.ops.roi_align (avg mode)
  roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, ...)
                                                       -> torchvision's _roi_align_backward
  get_compiler_version / get_compiling_cuda_version    -> informative strings
Any other kernel raises NotImplementedError("... not shimmed") when called, so an unexpected op
fails loudly instead of silently computing something else.

mmcv's avg-mode RoIAlign kernel and torchvision's `roi_align(aligned=...)` have the same
arithmetic (REFERENCE.md §1.7: start `x1 * scale - 0.5` when aligned, adaptive grid
`ceil(roi / P)` for sampling_ratio 0, bilinear with the `[-1, H]` band, average over the grid).

torchvision's CPU NMS orders equal scores by index (a stable sort); compiled mmcv's `nms_cpu` sorts
unstably. The two agree except in the order, and then possibly the survivors, of exactly equal
scores.

`matplotlib` (imported by mmdet for visualisation only) is replaced by an inert stub when it is
not installed.
"""

import importlib.util
import sys
import types

import torch
import torchvision

_AVG = 1  # mmcv's pool_mode code for 'avg' (0 is 'max')


def _nms(boxes, scores, iou_threshold, offset=0):
    if int(offset) != 0:
        raise NotImplementedError("mmdet_shim: nms with offset=1 is not shimmed")
    return torchvision.ops.nms(boxes, scores, float(iou_threshold))


def _check_pool_mode(pool_mode):
    if int(pool_mode) != _AVG:
        raise NotImplementedError("mmdet_shim: roi_align max pooling is not shimmed")


def _roi_align_forward(
    input,
    rois,
    output,
    argmax_y,
    argmax_x,
    aligned_height=7,
    aligned_width=7,
    spatial_scale=1.0,
    sampling_ratio=0,
    pool_mode=_AVG,
    aligned=True,
):
    _check_pool_mode(pool_mode)
    out = torchvision.ops.roi_align(
        input,
        rois,
        (int(aligned_height), int(aligned_width)),
        float(spatial_scale),
        int(sampling_ratio),
        bool(aligned),
    )
    output.copy_(out)


def _roi_align_backward(
    grad_output,
    rois,
    argmax_y,
    argmax_x,
    grad_input,
    aligned_height=7,
    aligned_width=7,
    spatial_scale=1.0,
    sampling_ratio=0,
    pool_mode=_AVG,
    aligned=True,
):
    _check_pool_mode(pool_mode)
    n, c, h, w = grad_input.shape
    g = torch.ops.torchvision._roi_align_backward(
        grad_output.contiguous(),
        rois,
        float(spatial_scale),
        int(aligned_height),
        int(aligned_width),
        n,
        c,
        h,
        w,
        int(sampling_ratio),
        bool(aligned),
    )
    grad_input.copy_(g)


_KERNELS = {
    "nms": _nms,
    "roi_align_forward": _roi_align_forward,
    "roi_align_backward": _roi_align_backward,
    "get_compiler_version": lambda: "torchvision shim (no compiled mmcv ops)",
    "get_compiling_cuda_version": lambda: "not available",
}


def _not_shimmed(name):
    def fail(*args, **kwargs):
        raise NotImplementedError(f"mmdet_shim: mmcv kernel '{name}' is not shimmed")

    fail.__name__ = name
    return fail


def load_ext(name, funcs):
    """Replacement of `mmcv.utils.ext_loader.load_ext`: an object with one attribute per name."""
    ext = types.SimpleNamespace()
    for f in funcs:
        setattr(ext, f, _KERNELS.get(f) or _not_shimmed(f))
    return ext


def _stub_matplotlib():
    if "matplotlib" in sys.modules or importlib.util.find_spec("matplotlib") is not None:
        return

    class _Inert(types.ModuleType):
        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Inert(f"{self.__name__}.{attr}")

        def __call__(self, *args, **kwargs):
            return _Inert(self.__name__ + "()")

    for mod in ("matplotlib", "matplotlib.pyplot", "matplotlib.collections", "matplotlib.patches"):
        m = _Inert(mod)
        m.__path__ = []
        sys.modules[mod] = m


def install():
    """Installs the shim (idempotent). Fails if `mmcv.ops` was imported before it."""
    if "mmcv.ops" in sys.modules and not getattr(sys.modules["mmcv.ops"], "_cellseg_shim", False):
        raise RuntimeError("mmdet_shim must be imported before mmcv.ops / mmdet")
    _stub_matplotlib()
    import mmcv.utils.ext_loader as ext_loader

    ext_loader.load_ext = load_ext
    # `mmcv.utils` re-exports nothing of ext_loader by name, but be safe with `from ... import`.
    import mmcv.utils

    if hasattr(mmcv.utils, "load_ext"):
        mmcv.utils.load_ext = load_ext
    import mmcv.ops

    mmcv.ops._cellseg_shim = True


install()
