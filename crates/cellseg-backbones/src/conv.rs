//! `Conv2d` with PyTorch names and optional TensorFlow "same" padding.

use tch::{Tensor, nn};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Symmetric zero padding of this many pixels on every side (PyTorch `padding=`).
    Explicit(i64),
    /// TensorFlow "SAME": the total padding `max((ceil(i/s)-1)·s + (k-1)·d + 1 - i, 0)` is
    /// computed from the input size at each call and split with the extra pixel at the
    /// bottom/right (timm `Conv2dSame`, `pad_same`).
    TfSame,
}

/// Creates a parameter under `p` with `init`, trainable or not.
pub(crate) fn param(
    p: &nn::Path,
    name: &str,
    dims: &[i64],
    init: nn::Init,
    trainable: bool,
) -> Tensor {
    let t = nn::init(init, dims, p.device());
    p.add(name, t, trainable)
}

/// mmdet / torchvision default for ResNet convs: Kaiming normal, fan-out, ReLU gain.
pub(crate) const KAIMING_FAN_OUT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

/// Options of a [`Conv2d`] besides its channels and kernel.
#[derive(Debug, Clone, Copy)]
pub struct ConvOptions {
    /// Stride (both axes).
    pub stride: i64,
    /// Padding.
    pub padding: Padding,
    /// Groups (`in` for depthwise).
    pub groups: i64,
    /// Whether there is a `bias` parameter.
    pub bias: bool,
    /// Initialisation of `weight` (biases start at 0).
    pub init: nn::Init,
    /// Whether the parameters are trained.
    pub trainable: bool,
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: Padding::Explicit(0),
            groups: 1,
            bias: false,
            init: KAIMING_FAN_OUT,
            trainable: true,
        }
    }
}

/// A 2-D convolution, PyTorch `nn.Conv2d` (and timm `Conv2dSame` with [`Padding::TfSame`]).
///
/// # Checkpoint keys
/// `weight` (`[out, in/groups, k, k]`), and `bias` (`[out]`) when it has one.
#[derive(Debug)]
pub struct Conv2d {
    /// Kernel, `[out, in/groups, k, k]` f32.
    weight: Tensor,
    /// Bias, `[out]` f32.
    bias: Option<Tensor>,
    kernel: i64,
    stride: i64,
    padding: Padding,
    groups: i64,
}

impl Conv2d {
    /// Builds a `k`×`k` convolution from `c_in` to `c_out` channels under `p`.
    pub fn new(p: &nn::Path, c_in: i64, c_out: i64, k: i64, o: ConvOptions) -> Self {
        let weight = param(p, "weight", &[c_out, c_in / o.groups, k, k], o.init, o.trainable);
        let bias = o.bias.then(|| param(p, "bias", &[c_out], nn::Init::Const(0.0), o.trainable));
        Self { weight, bias, kernel: k, stride: o.stride, padding: o.padding, groups: o.groups }
    }

    /// Number of output channels.
    pub fn out_channels(&self) -> i64 {
        self.weight.size()[0]
    }

    /// Applies the convolution to `x` (`[N, C_in, H, W]` f32).
    ///
    /// # Panics
    /// If `x` does not have `C_in` channels.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self.padding {
            Padding::Explicit(pad) => self.conv(x, pad),
            Padding::TfSame => {
                let size = x.size();
                let (ph, pw) = (self.same_pad(size[2]), self.same_pad(size[3]));
                if ph % 2 == 0 && pw % 2 == 0 && ph == pw {
                    self.conv(x, ph / 2)
                } else {
                    let x = x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
                    self.conv(&x, 0)
                }
            }
        }
    }

    fn same_pad(&self, input: i64) -> i64 {
        let out = (input + self.stride - 1) / self.stride;
        ((out - 1) * self.stride + self.kernel - input).max(0)
    }

    fn conv(&self, x: &Tensor, pad: i64) -> Tensor {
        x.conv2d(&self.weight, self.bias.as_ref(), [self.stride], [pad], [1], self.groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};
    const FLOAT: Kind = Kind::Float;

    #[test]
    fn tf_same_keeps_ceil_of_size_over_stride() {
        let vs = nn::VarStore::new(Device::Cpu);
        for (k, s) in [(3, 2), (5, 2), (3, 1), (5, 1), (1, 1)] {
            let o = ConvOptions { stride: s, padding: Padding::TfSame, ..Default::default() };
            let conv = Conv2d::new(&(vs.root() / format!("c{k}{s}")), 2, 4, k, o);
            for (h, w) in [(7, 8), (16, 15), (1, 2)] {
                let y = conv.forward(&Tensor::zeros([1, 2, h, w], (FLOAT, Device::Cpu)));
                assert_eq!(y.size(), [1, 4, (h + s - 1) / s, (w + s - 1) / s], "k{k} s{s}");
            }
        }
    }

    #[test]
    fn tf_same_pads_the_extra_pixel_at_the_bottom_right() {
        // A 2×2-stride 3×3 sum over a 4×4 ramp: TF pads 0 top/left and 1 bottom/right.
        let vs = nn::VarStore::new(Device::Cpu);
        let o = ConvOptions { stride: 2, padding: Padding::TfSame, ..Default::default() };
        let conv = Conv2d::new(&vs.root(), 1, 1, 3, o);
        let _ = tch::no_grad(|| vs.variables()["weight"].shallow_clone().fill_(1.0));
        let x = Tensor::arange(16, (FLOAT, Device::Cpu)).view([1, 1, 4, 4]);
        let y = conv.forward(&x).view([4]);
        // top-left output sums rows 0..3, cols 0..3 of the unpadded input.
        let first = x.narrow(2, 0, 3).narrow(3, 0, 3).sum(FLOAT).double_value(&[]);
        assert_eq!(y.double_value(&[0]), first);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use tch::{Device, Kind};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// TF "same" gives ⌈i/s⌉ outputs and equals an explicit asymmetric pad + valid conv.
        #[test]
        fn tf_same_is_ceil_and_pads_bottom_right(h in 1i64..20, w in 1i64..20, k in prop::sample::select(vec![1i64, 3, 5]), s in 1i64..3) {
            let vs = nn::VarStore::new(Device::Cpu);
            let o = ConvOptions { stride: s, padding: Padding::TfSame, ..Default::default() };
            let conv = Conv2d::new(&vs.root(), 2, 3, k, o);
            let x = Tensor::randn([1, 2, h, w], (Kind::Float, Device::Cpu));
            let y = conv.forward(&x);
            prop_assert_eq!(y.size(), vec![1, 3, (h + s - 1) / s, (w + s - 1) / s]);
            let pad = |i: i64| (((i + s - 1) / s - 1) * s + k - i).max(0);
            let (ph, pw) = (pad(h), pad(w));
            let xp = x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
            let want = xp.conv2d(&vs.variables()["weight"], None::<&Tensor>, [s], [0], [1], 1);
            prop_assert!(y.allclose(&want, 1e-5, 1e-5, false));
        }
    }
}
