use super::*;
use crate::test_python::{assert_masks_match, moments, reference, repo_root};

#[test]
fn dsb_column_major_csv_matches_numpy() {
    let dir = repo_root().join("tests/data/dsb2018_stage1_test");
    let csv = dir.join("stage1_solution_subset.csv");
    let ds = DsbDataset::read(&csv, &dir.join("images"), Strictness::Strict).unwrap();
    assert_eq!(ds.images.len(), 50);
    assert_eq!(ds.images.iter().map(|i| i.instances.len()).sum::<usize>(), 3311);
    let want = reference("dsb", &csv, &[]);
    for im in &ds.images {
        assert_masks_match(&im.id, &im.instances.masks, &want[&im.id]);
    }
    // RGBA PNGs decode to 3 channels of the CSV's size
    for i in [0, 17, 49] {
        let s = ds.load(i).unwrap();
        assert_eq!(s.image.size(), s.instances.image_size);
        assert_eq!(s.image.channels(), 3);
    }
}

#[test]
fn stardist_label_tiff_matches_tifffile() {
    let dir = repo_root().join("tests/data/stardist_dsb2018_nuclei_2d");
    let (s, ids) = read_label_pair(&dir.join("img2d.tif"), &dir.join("mask2d.tif")).unwrap();
    assert_eq!(s.instances.len(), 125);
    let want = reference("labels", &dir.join("mask2d.tif"), &[]);
    let want_ids: Vec<u64> =
        want["ids"].as_array().unwrap().iter().map(|v| v[0].as_u64().unwrap()).collect();
    assert_eq!(ids.iter().map(|&v| v as u64).collect::<Vec<_>>(), want_ids);
    assert_masks_match("mask2d", &s.instances.masks, &want["masks"]);
    assert_eq!(s.image.size(), ImageSize::new(512, 512));
    let _ = moments;
}

#[test]
fn real_dsb_copy_in_shared_realdata_reads_too() {
    let Some(root) = crate::test_python::realdata() else { return };
    let dir = root.join("dsb2018_stage1_test");
    let ds = DsbDataset::read(
        &dir.join("stage1_solution_subset.csv"),
        &dir.join("images"),
        Strictness::Strict,
    )
    .unwrap();
    assert_eq!(ds.images.len(), 50);
}

#[test]
fn bad_dsb_rows_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    crate::raster::write_png(
        &crate::raster::Image::filled(ImageSize::new(6, 5), 3, 1),
        &dir.path().join("x.png"),
    )
    .unwrap();
    let csv = dir.path().join("s.csv");
    for (what, bad) in
        [("rle", "x,1 z,6,5\n"), ("size", "x,1 2,7,5\n"), ("outside", "x,29 5,6,5\n")]
    {
        std::fs::write(&csv, format!("ImageId,EncodedPixels,Height,Width\nx,1 2,6,5\n{bad}"))
            .unwrap();
        let err = DsbDataset::read(&csv, dir.path(), Strictness::Strict).unwrap_err().to_string();
        assert!(err.contains("s.csv line 3"), "{what}: {err}");
        let ds = DsbDataset::read(&csv, dir.path(), Strictness::Lenient).unwrap();
        assert_eq!((ds.skipped.len(), ds.images[0].instances.len()), (1, 1), "{what}");
    }
    std::fs::write(&csv, "ImageId,EncodedPixels,Height,Width\ny,1 2,6,5\n").unwrap();
    let err = DsbDataset::read(&csv, dir.path(), Strictness::Strict).unwrap_err();
    assert!(
        matches!(err, Error::MissingImage { .. }) && err.to_string().contains("y.png"),
        "{err}"
    );
}
