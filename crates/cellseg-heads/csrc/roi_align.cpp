// RoIAlign on the CPU over several pyramid levels at once, forward and backward, as a libtorch
// autograd function (so that tch's `backward` reaches the features through it).
//
// Arithmetic of torchvision's `roi_align` (and mmcv 1.3.17's avg mode), in the input's dtype:
// start = x1 * scale - (aligned ? 0.5 : 0), size = end - start (clamped to >= 1 when not aligned),
// bin = size / P, grid g = sampling_ratio > 0 ? sampling_ratio : ceil(size / P); each bin averages
// its g_h x g_w bilinear samples at start + p * bin + (i + 0.5) * bin / g, a sample outside
// [-1, H] x [-1, W] being 0 and the others clamped to [0, H-1] x [0, W-1].
//
// Parallelism (libtorch's intra-op pool): the forward pass splits the RoIs, the backward pass the
// channels, so that no two threads ever add into the same gradient element. Each gradient
// element receives its contributions in one fixed order (RoI, bin, sample) whatever the number
// of threads: results do not depend on the thread count.
//
// The C ABI below catches every exception and returns its message through `err` (malloc'd; freed
// by ra_free_error).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

// Channels processed together by the kernels' inner loops.
constexpr int64_t kChannels = 8;

// One bilinear sample: the four neighbours' offsets in a channel plane and their weights.
template <typename T>
struct Sample {
  int64_t o1, o2, o3, o4;
  T w1, w2, w3, w4;
};

// Where one RoI samples its image: the bins' sample grid, the divisor and the samples.
template <typename T>
struct RoiPlan {
  int64_t level = -1;  // -1: the RoI pools nothing (its output and gradient are zero)
  int64_t image = 0;
  int64_t grid_h = 0, grid_w = 0;
  T count = 1;
  std::vector<Sample<T>> samples;  // P*P bins x grid_h*grid_w samples, bin-major; w = 0 outside
  std::vector<uint8_t> inside;     // per sample: whether it lies in [-1, H] x [-1, W]
};

template <typename T>
void bilinear(T y, T x, int64_t h, int64_t w, Sample<T>& s, uint8_t& inside) {
  if (y < -1.0 || y > h || x < -1.0 || x > w) {
    s = Sample<T>{0, 0, 0, 0, 0, 0, 0, 0};
    inside = 0;
    return;
  }
  inside = 1;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int64_t y_low = static_cast<int64_t>(y);
  int64_t x_low = static_cast<int64_t>(x);
  int64_t y_high, x_high;
  if (y_low >= h - 1) {
    y_high = y_low = h - 1;
    y = static_cast<T>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= w - 1) {
    x_high = x_low = w - 1;
    x = static_cast<T>(x_low);
  } else {
    x_high = x_low + 1;
  }
  T ly = y - y_low;
  T lx = x - x_low;
  T hy = 1. - ly;
  T hx = 1. - lx;
  s.o1 = y_low * w + x_low;
  s.o2 = y_low * w + x_high;
  s.o3 = y_high * w + x_low;
  s.o4 = y_high * w + x_high;
  s.w1 = hy * hx;
  s.w2 = hy * lx;
  s.w3 = ly * hx;
  s.w4 = ly * lx;
}

// The plan of RoI `r` (rois [R, 5] float32/64 contiguous CPU; level [R] int64 CPU).
template <typename T>
RoiPlan<T> plan_roi(const at::TensorList& levels, const T* rois, const int64_t* level,
                    const std::vector<double>& scales, int64_t r, int64_t p, int64_t sampling_ratio,
                    bool aligned) {
  RoiPlan<T> plan;
  const T* roi = rois + r * 5;
  int64_t l = level[r];
  if (l < 0 || l >= static_cast<int64_t>(levels.size())) return plan;
  const int64_t b = static_cast<int64_t>(roi[0]);
  if (b < 0 || b >= levels[l].size(0)) return plan;
  const int64_t h = levels[l].size(2), w = levels[l].size(3);
  const double scale = scales[l];
  const T offset = aligned ? static_cast<T>(0.5) : static_cast<T>(0.0);
  T start_w = roi[1] * scale - offset;
  T start_h = roi[2] * scale - offset;
  T end_w = roi[3] * scale - offset;
  T end_h = roi[4] * scale - offset;
  T roi_w = end_w - start_w;
  T roi_h = end_h - start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, static_cast<T>(1.));
    roi_h = std::max(roi_h, static_cast<T>(1.));
  }
  const T bin_h = roi_h / static_cast<T>(p);
  const T bin_w = roi_w / static_cast<T>(p);
  const int64_t gh = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_h / p));
  const int64_t gw = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(roi_w / p));
  if (gh <= 0 || gw <= 0) return plan;  // an empty or inverted RoI: torchvision's loops are empty
  plan.level = l;
  plan.image = b;
  plan.grid_h = gh;
  plan.grid_w = gw;
  plan.count = static_cast<T>(std::max<int64_t>(gh * gw, 1));
  plan.samples.resize(p * p * gh * gw);
  plan.inside.resize(p * p * gh * gw);
  int64_t k = 0;
  for (int64_t ph = 0; ph < p; ++ph) {
    for (int64_t pw = 0; pw < p; ++pw) {
      for (int64_t iy = 0; iy < gh; ++iy) {
        const T y = start_h + ph * bin_h + static_cast<T>(iy + .5f) * bin_h / static_cast<T>(gh);
        for (int64_t ix = 0; ix < gw; ++ix) {
          const T x = start_w + pw * bin_w + static_cast<T>(ix + .5f) * bin_w / static_cast<T>(gw);
          bilinear<T>(y, x, h, w, plan.samples[k], plan.inside[k]);
          ++k;
        }
      }
    }
  }
  return plan;
}

template <typename T>
void forward_kernel(const at::TensorList& levels, const at::Tensor& rois, const at::Tensor& level,
                    const std::vector<double>& scales, int64_t p, int64_t sampling_ratio,
                    bool aligned, at::Tensor& out) {
  const int64_t r_total = rois.size(0);
  const int64_t c = out.size(1);
  const T* rp = rois.data_ptr<T>();
  const int64_t* lp = level.data_ptr<int64_t>();
  std::vector<const T*> base(levels.size());
  for (size_t l = 0; l < levels.size(); ++l) base[l] = levels[l].data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, r_total, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      RoiPlan<T> plan = plan_roi<T>(levels, rp, lp, scales, r, p, sampling_ratio, aligned);
      if (plan.level < 0) continue;  // the output was zero-filled
      const int64_t h = levels[plan.level].size(2), w = levels[plan.level].size(3);
      const int64_t per_bin = plan.grid_h * plan.grid_w;
      // kChannels channels at a time: independent sums, so that the additions of one channel
      // do not wait for each other (each channel's sum is still made in the same order).
      for (int64_t c0 = 0; c0 < c; c0 += kChannels) {
        const int64_t nc = std::min(kChannels, c - c0);
        const T* planes[kChannels];
        for (int64_t j = 0; j < nc; ++j) planes[j] = base[plan.level] + (plan.image * c + c0 + j) * h * w;
        T* o = op + (r * c + c0) * p * p;
        const Sample<T>* s = plan.samples.data();
        for (int64_t bin = 0; bin < p * p; ++bin) {
          T sum[kChannels] = {};
          for (int64_t k = 0; k < per_bin; ++k, ++s) {
            for (int64_t j = 0; j < nc; ++j) {
              const T* plane = planes[j];
              sum[j] += s->w1 * plane[s->o1] + s->w2 * plane[s->o2] + s->w3 * plane[s->o3] +
                        s->w4 * plane[s->o4];
            }
          }
          for (int64_t j = 0; j < nc; ++j) o[j * p * p + bin] = sum[j] / plan.count;
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const at::TensorList& levels, const at::Tensor& rois, const at::Tensor& level,
                     const std::vector<double>& scales, int64_t p, int64_t sampling_ratio,
                     bool aligned, const at::Tensor& grad_out, std::vector<at::Tensor>& grads) {
  const int64_t r_total = rois.size(0);
  const int64_t c = grad_out.size(1);
  const T* rp = rois.data_ptr<T>();
  const int64_t* lp = level.data_ptr<int64_t>();
  const T* gp = grad_out.data_ptr<T>();
  std::vector<T*> base(grads.size());
  for (size_t l = 0; l < grads.size(); ++l) base[l] = grads[l].data_ptr<T>();
  // The plans are made once (in parallel over RoIs), then every thread adds its channels. Each
  // weight is divided by the bin's sample count here, once, rather than per channel below (one
  // rounding different from torchvision's `grad * w / count`: within 1 ulp).
  std::vector<RoiPlan<T>> plans(r_total);
  at::parallel_for(0, r_total, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      plans[r] = plan_roi<T>(levels, rp, lp, scales, r, p, sampling_ratio, aligned);
      for (auto& s : plans[r].samples) {
        s.w1 /= plans[r].count;
        s.w2 /= plans[r].count;
        s.w3 /= plans[r].count;
        s.w4 /= plans[r].count;
      }
    }
  });
  at::parallel_for(0, c, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < r_total; ++r) {
      const RoiPlan<T>& plan = plans[r];
      if (plan.level < 0) continue;
      const int64_t h = levels[plan.level].size(2), w = levels[plan.level].size(3);
      const int64_t per_bin = plan.grid_h * plan.grid_w;
      // kChannels channels at a time, as in the forward pass: the additions into different
      // planes are independent (each element still receives its terms in the same order).
      for (int64_t c0 = begin; c0 < end; c0 += kChannels) {
        const int64_t nc = std::min(kChannels, end - c0);
        T* planes[kChannels];
        for (int64_t j = 0; j < nc; ++j) planes[j] = base[plan.level] + (plan.image * c + c0 + j) * h * w;
        const T* g = gp + (r * c + c0) * p * p;
        const Sample<T>* s = plan.samples.data();
        const uint8_t* in = plan.inside.data();
        for (int64_t bin = 0; bin < p * p; ++bin) {
          T gb[kChannels];
          for (int64_t j = 0; j < nc; ++j) gb[j] = g[j * p * p + bin];
          for (int64_t k = 0; k < per_bin; ++k, ++s, ++in) {
            if (!*in) continue;
            for (int64_t j = 0; j < nc; ++j) {
              T* plane = planes[j];
              plane[s->o1] += gb[j] * s->w1;
              plane[s->o2] += gb[j] * s->w2;
              plane[s->o3] += gb[j] * s->w3;
              plane[s->o4] += gb[j] * s->w4;
            }
          }
        }
      }
    }
  });
}

void check_inputs(const at::TensorList& levels, const at::Tensor& rois, const at::Tensor& level,
                  const std::vector<double>& scales) {
  TORCH_CHECK(!levels.empty(), "roi_align: no feature levels");
  TORCH_CHECK(scales.size() == levels.size(), "roi_align: ", levels.size(), " levels but ",
              scales.size(), " scales");
  const auto kind = levels[0].scalar_type();
  TORCH_CHECK(kind == at::kFloat || kind == at::kDouble,
              "roi_align: features must be float32 or float64, got ", kind);
  for (const auto& f : levels) {
    TORCH_CHECK(f.device().is_cpu() && f.dim() == 4 && f.scalar_type() == kind &&
                    f.size(1) == levels[0].size(1) && f.size(0) == levels[0].size(0),
                "roi_align: every level must be a CPU [B, C, H, W] tensor of one dtype, B and C, "
                "got ", f.sizes(), " ", f.scalar_type(), " on ", f.device(), " (first level ",
                levels[0].sizes(), ")");
  }
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5 && rois.device().is_cpu(),
              "roi_align: rois must be a CPU [R, 5] tensor, got ", rois.sizes());
  TORCH_CHECK(level.dim() == 1 && level.size(0) == rois.size(0) &&
                  level.scalar_type() == at::kLong && level.device().is_cpu(),
              "roi_align: level must be a CPU int64 [R] tensor, got ", level.sizes(), " ",
              level.scalar_type());
}

class RoiAlignLevels : public torch::autograd::Function<RoiAlignLevels> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList levels,
                            const at::Tensor& rois, const at::Tensor& level,
                            std::vector<double> scales, int64_t p, int64_t sampling_ratio,
                            bool aligned) {
    check_inputs(levels, rois, level, scales);
    std::vector<at::Tensor> feats;
    feats.reserve(levels.size());
    for (const auto& f : levels) feats.push_back(f.contiguous());
    const auto kind = feats[0].scalar_type();
    at::Tensor rois_c = rois.to(kind).contiguous();
    at::Tensor level_c = level.contiguous();
    at::Tensor out = at::zeros({rois.size(0), feats[0].size(1), p, p}, feats[0].options());
    AT_DISPATCH_FLOATING_TYPES(kind, "cellseg_roi_align_forward", [&] {
      forward_kernel<scalar_t>(feats, rois_c, level_c, scales, p, sampling_ratio, aligned, out);
    });
    std::vector<int64_t> shapes;
    for (const auto& f : feats) {
      for (auto s : f.sizes()) shapes.push_back(s);
    }
    ctx->saved_data["shapes"] = shapes;
    ctx->saved_data["scales"] = scales;
    ctx->saved_data["p"] = p;
    ctx->saved_data["sampling_ratio"] = sampling_ratio;
    ctx->saved_data["aligned"] = aligned;
    ctx->saved_data["rois"] = rois_c;
    ctx->saved_data["level"] = level_c;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto shapes = ctx->saved_data["shapes"].toIntVector();
    const auto scales = ctx->saved_data["scales"].toDoubleVector();
    const int64_t p = ctx->saved_data["p"].toInt();
    const int64_t sampling_ratio = ctx->saved_data["sampling_ratio"].toInt();
    const bool aligned = ctx->saved_data["aligned"].toBool();
    const at::Tensor rois = ctx->saved_data["rois"].toTensor();
    const at::Tensor level = ctx->saved_data["level"].toTensor();
    const at::Tensor grad_out = grad_outputs[0].contiguous();
    const size_t n_levels = shapes.size() / 4;
    std::vector<at::Tensor> grads;
    for (size_t l = 0; l < n_levels; ++l) {
      grads.push_back(at::zeros({shapes[4 * l], shapes[4 * l + 1], shapes[4 * l + 2],
                                 shapes[4 * l + 3]},
                                grad_out.options()));
    }
    // The kernel reads only the levels' sizes.
    AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "cellseg_roi_align_backward", [&] {
      backward_kernel<scalar_t>(grads, rois, level, scales, p, sampling_ratio, aligned, grad_out,
                                grads);
    });
    torch::autograd::variable_list result(grads.begin(), grads.end());
    // rois, level, scales, p, sampling_ratio, aligned: no gradient.
    for (int i = 0; i < 6; ++i) result.emplace_back();
    return result;
  }
};

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

}  // namespace

extern "C" {

void ra_free_error(char* err) { std::free(err); }

// RoIAlign of rois [R, 5] over levels[level[r]] at scales[level[r]]: writes a new at::Tensor*
// ([R, C, P, P], differentiable in the levels) into `out`; 0 on success, else 1 and `err`.
int ra_roi_align_levels(at::Tensor** levels, int n_levels, const double* scales, at::Tensor* rois,
                        at::Tensor* level, int64_t p, int64_t sampling_ratio, int aligned,
                        at::Tensor** out, char** err) {
  try {
    std::vector<at::Tensor> feats;
    for (int l = 0; l < n_levels; ++l) feats.push_back(*levels[l]);
    std::vector<double> sc(scales, scales + n_levels);
    at::Tensor result = RoiAlignLevels::apply(at::TensorList(feats), *rois, *level, sc, p,
                                              sampling_ratio, aligned != 0);
    *out = new at::Tensor(std::move(result));
    return 0;
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

}  // extern "C"
