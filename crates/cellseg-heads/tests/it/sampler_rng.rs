//! `RandomSampler::sample_counted` draws exactly what `sample` draws from the same libtorch RNG
//! state. libtorch's generator is process-global, so this comparison is an integration test that
//! holds [`torch_lock`] (every test of this binary that draws from the generator does): in the
//! library's unit tests other threads drew between the two seeds and made it flaky.

use cellseg_core::testing::torch_lock;
use cellseg_heads::assign::sampler::RandomSampler;
use cellseg_heads::config::SamplerConfig;
use tch::Tensor;

#[test]
fn counted_sampling_equals_plain_sampling() {
    let _torch = torch_lock();
    let g = Tensor::from_slice(&[1i64, 0, 0, 2, -1, 0, 3, 3, 0, 0, 0, 4, 0, -1, 0]);
    let s = RandomSampler::new(&SamplerConfig {
        num: 6,
        pos_fraction: 0.5,
        add_gt_as_proposals: false,
    });
    for seed in 0..20 {
        tch::manual_seed(seed);
        let a = s.sample(&g);
        tch::manual_seed(seed);
        let b = s.sample_counted(&g, 5, 8);
        for (x, y) in [(&a.pos_inds, &b.pos_inds), (&a.neg_inds, &b.neg_inds)] {
            assert_eq!(
                Vec::<i64>::try_from(x).unwrap(),
                Vec::<i64>::try_from(y).unwrap(),
                "seed {seed}"
            );
        }
    }
}
