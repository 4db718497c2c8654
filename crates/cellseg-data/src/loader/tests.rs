use super::*;
use crate::AugmentConfig;
use crate::sample::Sample;
use crate::synthetic;
use cellseg_core::ImageSize;

fn source(n: usize) -> Arc<dyn SampleSource> {
    Arc::new(synthetic::samples(n, ImageSize::new(300, 320), 5))
}

fn loader(src: Arc<dyn SampleSource>, threads: usize, seed: u64) -> Loader {
    let cfg = LoaderConfig { batch_size: 3, seed, threads, ..LoaderConfig::default() };
    Loader::new(src, Some(Augment::new(AugmentConfig::all_on()).unwrap()), cfg).unwrap()
}

#[test]
fn epochs_are_deterministic_whatever_the_thread_count() {
    let src = source(8);
    let a: Vec<Batch> = loader(src.clone(), 1, 7).epoch(0).map(|b| b.unwrap()).collect();
    let b: Vec<Batch> = loader(src.clone(), 2, 7).epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(a.len(), 2, "8 samples, batch 3, drop_last");
    assert_eq!(a, b);
    let c: Vec<Batch> = loader(src.clone(), 2, 7).epoch(1).map(|b| b.unwrap()).collect();
    assert_ne!(a[0].ids, c[0].ids, "another epoch, another order");
    let d: Vec<Batch> = loader(src, 2, 8).epoch(0).map(|b| b.unwrap()).collect();
    assert_ne!(a, d, "another seed");
}

#[test]
fn batches_are_contiguous_normalised_crops() {
    let l = loader(source(6), 2, 1);
    assert_eq!(l.batches_per_epoch(), 2);
    let mut seen = Vec::new();
    for b in l.epoch(3) {
        let b = b.unwrap();
        assert_eq!(b.shape, [3, 3, 256, 256]);
        assert_eq!(b.images.len(), 3 * 3 * 256 * 256);
        assert_eq!(b.instances.len(), 3);
        for inst in &b.instances {
            assert!(!inst.is_empty());
            assert_eq!(inst.image_size, ImageSize::new(256, 256));
        }
        // normalised gray: channel 0 ≈ (v - 123.675) / 58.395 within the 0..255 range
        assert!(b.image(0).iter().all(|v| (-2.2..2.7).contains(v)));
        seen.extend(b.ids);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "each sample once per epoch");
}

#[test]
fn validation_mode_pads_to_the_divisor_and_keeps_order() {
    let src: Arc<dyn SampleSource> = Arc::new(synthetic::samples(3, ImageSize::new(100, 90), 2));
    let cfg =
        LoaderConfig { batch_size: 2, shuffle: false, drop_last: false, ..LoaderConfig::default() };
    let l = Loader::new(src, None, cfg).unwrap();
    let batches: Vec<Batch> = l.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].shape, [2, 3, 128, 96]);
    assert_eq!(batches[0].image_sizes[0], ImageSize::new(100, 90));
    assert_eq!(batches[1].ids, vec!["synthetic_0002_cort".to_string()]);
}

#[test]
fn errors_end_the_epoch_and_dropping_early_stops_the_producer() {
    struct Failing;
    impl SampleSource for Failing {
        fn len(&self) -> usize {
            4
        }
        fn load(&self, index: usize) -> Result<Sample> {
            Err(Error::MissingImage {
                image: format!("img{index}.png").into(),
                annotations: "train.csv".into(),
                row: "line 2".into(),
            })
        }
    }
    let l = Loader::new(
        Arc::new(Failing),
        None,
        LoaderConfig { batch_size: 2, ..LoaderConfig::default() },
    )
    .unwrap();
    let items: Vec<_> = l.epoch(0).collect();
    assert_eq!(items.len(), 1);
    assert!(items[0].as_ref().unwrap_err().to_string().contains(".png"));
    let l = loader(source(9), 1, 0);
    let mut it = l.epoch(0);
    assert!(it.next().is_some());
    drop(it); // must not hang
}
