use super::*;
use crate::synthetic;
use crate::test_python::{assert_masks_match, realdata, reference};

fn realdata_paths() -> Option<(PathBuf, PathBuf)> {
    let root = realdata()?.join("sartorius");
    Some((root.join("train_subset.csv"), root.join("train_images")))
}

#[test]
fn plate_and_well_come_from_sample_id() {
    let (p, w, pw) = plate_well("shsy5y[diff]_E10-4_Vessel-714_Ph_3").unwrap();
    assert_eq!((p.as_str(), w.as_str(), pw.as_str()), ("shsy5y[diff]", "E10", "shsy5y[diff]_E10"));
    assert_eq!(plate_well(""), None);
}

#[test]
fn real_train_csv_matches_numpy_decode_raw_and_filled() {
    let Some((csv, images)) = realdata_paths() else { return };
    for (opts, extra) in
        [(SartoriusOptions::validation(), vec![]), (SartoriusOptions::default(), vec!["--fill"])]
    {
        let ds = SartoriusDataset::read_csv(&csv, &images, &opts).unwrap();
        assert_eq!(ds.ids(), ["0030fd0e6378", "2d8810967b36", "f17f964687b3", "ffc2ead3e8cc"]);
        assert_eq!(ds.images.iter().map(|i| i.instances.len()).sum::<usize>(), 623);
        let want = reference("sartorius", &csv, &extra);
        for im in &ds.images {
            assert_masks_match(&im.id, &im.instances.masks, &want[&im.id]);
            for (b, m) in im.instances.boxes.iter().zip(&im.instances.masks) {
                assert_eq!(Some(*b), m.bbox());
            }
        }
        let first = &ds.images[0];
        assert_eq!(first.cell_type, CellType::Shsy5y);
        assert_eq!(first.plate_well.as_deref(), Some("shsy5y[diff]_E10"));
        assert_eq!(ds.images[3].cell_type, CellType::Astro);
        assert_eq!(first.load_image().unwrap().size(), ImageSize::new(520, 704));
    }
}

#[test]
fn real_verbatim_train_csv_rows_read_like_the_subset() {
    let Some((csv, images)) = realdata_paths() else { return };
    let rows = csv.parent().unwrap().join("annotations/original_train_csv_rows_0030fd0e6378.csv");
    let opts = SartoriusOptions::default();
    let verbatim = SartoriusDataset::read_csv(&rows, &images, &opts).unwrap();
    let subset = SartoriusDataset::read_csv(&csv, &images, &opts).unwrap();
    assert_eq!(verbatim.images.len(), 1);
    assert_eq!(verbatim.images[0].instances, subset.images[0].instances);
    assert_eq!(verbatim.images[0].sample_id, "shsy5y[diff]_E10-4_Vessel-714_Ph_3");
}

#[test]
fn real_unlabeled_images_are_listed_and_decode() {
    let Some(root) = realdata() else { return };
    let test = read_test_images(&root.join("sartorius/unlabeled/test")).unwrap();
    assert_eq!(
        test.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["7ae19de7bc2a", "d48ec7815252", "d8bfd1dafdc4"]
    );
    for dir in ["test", "train_semi_supervised", "unidentified"] {
        for (_, p) in read_test_images(&root.join("sartorius/unlabeled").join(dir)).unwrap() {
            assert_eq!(read_image(&p).unwrap().size(), ImageSize::new(520, 704), "{}", p.display());
        }
    }
}

#[test]
fn synthetic_layout_round_trips_and_gives_folds() {
    let dir = tempfile::tempdir().unwrap();
    let summary = synthetic::generate_sartorius(dir.path(), 12, 3).unwrap();
    let ds = SartoriusDataset::read(dir.path(), &SartoriusOptions::validation()).unwrap();
    assert_eq!(ds.images.len(), 12);
    assert_eq!(ds.images.iter().map(|i| i.instances.len()).sum::<usize>(), summary.instances);
    let folds = ds.group_kfold(5).unwrap();
    assert_eq!(folds.len(), 12);
    assert!((0..5).all(|f| folds.contains(&f)));
    // same plate_well => same fold
    for i in 0..12 {
        for j in 0..12 {
            if ds.images[i].plate_well == ds.images[j].plate_well {
                assert_eq!(folds[i], folds[j]);
            }
        }
    }
    assert_eq!(read_test_images(&dir.path().join("test")).unwrap().len(), 3);
    // the written masks are the generator's masks
    let s = ds.load(0).unwrap();
    assert_eq!(s.image.size(), synthetic::FRAME);
}

#[test]
fn corrected_masks_clip_every_instance_to_the_red_channel() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::generate_sartorius(dir.path(), 2, 4).unwrap();
    let plain = SartoriusDataset::read(dir.path(), &SartoriusOptions::default()).unwrap();
    let fix = dir.path().join("hck_fix");
    std::fs::create_dir(&fix).unwrap();
    let k = plain.images.iter().position(|i| i.cell_type == CellType::Astro).unwrap();
    let other = plain.images.iter().position(|i| i.cell_type != CellType::Astro).unwrap();
    let id = &plain.images[k].id;
    let size = synthetic::FRAME;
    // red only on the left half
    let mut rgb = vec![0u8; size.pixels() * 3];
    for r in 0..size.height {
        for c in 0..size.width / 2 {
            rgb[(r * size.width + c) * 3] = 255;
        }
    }
    crate::raster::write_png(&Image::new(size, 3, rgb).unwrap(), &fix.join(format!("{id}.png")))
        .unwrap();
    // Every astro image needs its mask: the others' are all red (nothing clipped).
    let astro: Vec<&String> =
        plain.images.iter().filter(|i| i.cell_type == CellType::Astro).map(|i| &i.id).collect();
    assert!(astro.contains(&id));
    for other in astro.iter().filter(|o| **o != id) {
        let red = Image::new(size, 3, vec![255; size.pixels() * 3]).unwrap();
        crate::raster::write_png(&red, &fix.join(format!("{other}.png"))).unwrap();
    }
    let opts =
        SartoriusOptions { corrected_masks: Some(fix.clone()), ..SartoriusOptions::default() };
    let clipped = SartoriusDataset::read(dir.path(), &opts).unwrap();
    // Bad folders, named: absent; missing an astro image's mask; a mask of another size.
    let absent =
        SartoriusOptions { corrected_masks: Some(dir.path().join("nope")), ..opts.clone() };
    let e = SartoriusDataset::read(dir.path(), &absent).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    let empty = dir.path().join("empty_fix");
    std::fs::create_dir(&empty).unwrap();
    let missing = SartoriusOptions { corrected_masks: Some(empty.clone()), ..opts.clone() };
    let e = SartoriusDataset::read(dir.path(), &missing).unwrap_err().to_string();
    assert!(e.contains(&format!("astro image {id}")) && e.contains("empty_fix"), "{e}");
    let small = Image::new(ImageSize::new(4, 4), 3, vec![255; 48]).unwrap();
    crate::raster::write_png(&small, &empty.join(format!("{id}.png"))).unwrap();
    let e = SartoriusDataset::read(dir.path(), &missing).unwrap_err().to_string();
    assert!(e.contains("corrected mask") && e.contains(id.as_str()), "{e}");
    assert_eq!(
        clipped.images[other], plain.images[other],
        "an image without a corrected mask is unchanged"
    );
    let (a, b) = (&plain.images[k].instances, &clipped.images[k].instances);
    assert_eq!(a.len(), b.len(), "emptied instances are kept (seed)");
    let mut emptied = 0;
    for (k, (ma, mb)) in a.masks.iter().zip(&b.masks).enumerate() {
        let (fa, fb) = (ma.to_full(), mb.to_full());
        for r in 0..size.height {
            for c in 0..size.width {
                assert_eq!(fb.get(r, c), fa.get(r, c) && c < size.width / 2);
            }
        }
        if mb.area() == 0 {
            emptied += 1;
            assert_eq!(b.boxes[k], BoxXyxy::default());
        }
    }
    assert!(emptied > 0);
}

/// A tiny train.csv with one image for the bad-input tests.
fn tiny_layout(rows: &str, png: Option<&[u8]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("train")).unwrap();
    let header =
        "id,annotation,width,height,cell_type,plate_time,sample_date,sample_id,elapsed_timedelta\n";
    std::fs::write(dir.path().join("train.csv"), format!("{header}{rows}")).unwrap();
    let p = dir.path().join("train/aaaaaaaaaaaa.png");
    match png {
        Some(bytes) => std::fs::write(p, bytes).unwrap(),
        None => {
            crate::raster::write_png(&Image::filled(ImageSize::new(8, 10), 1, 9), &p).unwrap();
        }
    }
    dir
}

const ROW: &str = "aaaaaaaaaaaa,12 3 22 3,10,8,cort,,,cort[x]_A1-1_V_Ph_1,\n";

#[test]
fn bad_rows_name_the_file_and_line_or_are_skipped_with_a_reason() {
    let strict = SartoriusOptions::default();
    let lenient =
        SartoriusOptions { strictness: Strictness::Lenient, ..SartoriusOptions::default() };
    let cases: [(&str, &str, &str); 5] = [
        ("bad RLE", "aaaaaaaaaaaa,12 x 22 3,10,8,cort,,,s_A1-1,\n", "line 3"),
        ("wrong width", "aaaaaaaaaaaa,12 3,11,8,cort,,,cort[x]_A1-1_V_Ph_1,\n", "line 3"),
        ("outside", "aaaaaaaaaaaa,75 10,10,8,cort,,,cort[x]_A1-1_V_Ph_1,\n", "line 3"),
        (
            "non-integer height",
            "aaaaaaaaaaaa,12 3,10,eight,cort,,,cort[x]_A1-1_V_Ph_1,\n",
            "line 3",
        ),
        ("short row", "aaaaaaaaaaaa,12 3,10\n", "line 3"),
    ];
    for (what, bad, line) in cases {
        let dir = tiny_layout(&format!("{ROW}{bad}"), None);
        let err = SartoriusDataset::read(dir.path(), &strict).unwrap_err().to_string();
        assert!(err.contains("train.csv") && err.contains(line), "{what}: {err}");
        if what == "outside" {
            assert!(err.contains("outside"), "{err}");
        }
        let ds =
            SartoriusDataset::read(dir.path(), &lenient).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ds.skipped.len(), 1, "{what}");
        assert_eq!(ds.skipped[0].row, "line 3", "{what}");
        assert_eq!(ds.images.len(), 1, "{what}: the good row stays");
        assert_eq!(ds.images[0].instances.len(), 1, "{what}");
    }
}

#[test]
fn missing_and_corrupt_images_and_size_mismatch_are_errors_naming_the_file() {
    let strict = SartoriusOptions::default();
    let lenient =
        SartoriusOptions { strictness: Strictness::Lenient, ..SartoriusOptions::default() };
    // missing
    let dir = tiny_layout(ROW, None);
    std::fs::remove_file(dir.path().join("train/aaaaaaaaaaaa.png")).unwrap();
    let err = SartoriusDataset::read(dir.path(), &strict).unwrap_err();
    assert!(matches!(err, Error::MissingImage { .. }), "{err}");
    assert!(
        err.to_string().contains("aaaaaaaaaaaa.png") && err.to_string().contains("line 2"),
        "{err}"
    );
    let ds = SartoriusDataset::read(dir.path(), &lenient).unwrap();
    assert!(ds.images.is_empty() && ds.skipped.len() == 1);
    // corrupt
    let dir = tiny_layout(ROW, Some(b"\x89PNG\r\n\x1a\ngarbage"));
    let err = SartoriusDataset::read(dir.path(), &strict).unwrap_err();
    assert!(
        matches!(err, Error::ImageDecode { .. }) && err.to_string().contains("aaaaaaaaaaaa.png"),
        "{err}"
    );
    assert_eq!(SartoriusDataset::read(dir.path(), &lenient).unwrap().skipped.len(), 1);
    // image size differs from the CSV
    let dir = tiny_layout(&ROW.replace(",10,8,", ",12,8,").replace("22 3", "25 3"), None);
    let err = SartoriusDataset::read(dir.path(), &strict).unwrap_err().to_string();
    assert!(err.contains("8x12") && err.contains("8x10") && err.contains("line 2"), "{err}");
    // unknown cell type
    let dir = tiny_layout(&ROW.replace("cort,", "neuron,"), None);
    let err = SartoriusDataset::read(dir.path(), &strict).unwrap_err().to_string();
    assert!(err.contains("neuron") && err.contains("line 2"), "{err}");
    // a corrupt PNG passes the header check when only the data is broken: loading names it
    let mut png = Vec::new();
    {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.png");
        crate::raster::write_png(&Image::filled(ImageSize::new(8, 10), 1, 9), &p).unwrap();
        png = std::fs::read(p).unwrap_or(png);
    }
    let n = png.len();
    png.truncate(n - 20);
    let dir = tiny_layout(ROW, Some(&png));
    if let Ok(ds) = SartoriusDataset::read(dir.path(), &strict) {
        let err = ds.load(0).unwrap_err().to_string();
        assert!(err.contains("aaaaaaaaaaaa.png"), "{err}");
    }
}

#[test]
fn anomalies_are_removed_by_option() {
    let rows = ROW.to_string() + &ROW.replace("aaaaaaaaaaaa", "03b27b381a5f");
    let dir = tiny_layout(&rows, None);
    crate::raster::write_png(
        &Image::filled(ImageSize::new(8, 10), 1, 9),
        &dir.path().join("train/03b27b381a5f.png"),
    )
    .unwrap();
    let ds = SartoriusDataset::read(dir.path(), &SartoriusOptions::default()).unwrap();
    assert_eq!(ds.ids(), ["aaaaaaaaaaaa"]);
    let keep = SartoriusOptions { remove_anomalies: false, ..SartoriusOptions::default() };
    assert_eq!(
        SartoriusDataset::read(dir.path(), &keep).unwrap().ids(),
        ["03b27b381a5f", "aaaaaaaaaaaa"]
    );
}

#[test]
fn written_annotations_read_back_as_the_same_instances() {
    let dir = tempfile::tempdir().unwrap();
    let samples = synthetic::samples(4, ImageSize::new(96, 128), 9);
    let csv = dir.path().join("truth.csv");
    let name = |s: &Sample| CellType::from_label(s.instances.labels[0]).unwrap().name().to_string();
    write_annotated(&csv, &dir.path().join("images"), &samples, name).unwrap();
    let ds = SartoriusDataset::read_csv(
        &csv,
        &dir.path().join("images"),
        &SartoriusOptions::validation(),
    )
    .unwrap();
    assert_eq!(ds.images.len(), 4);
    for (i, s) in samples.iter().enumerate() {
        let back = ds.load(i).unwrap();
        assert_eq!(back.id, s.id);
        assert_eq!(back.image.as_slice(), s.image.as_slice());
        assert_eq!(back.instances.masks, s.instances.masks);
    }
}

#[test]
fn dsb_images_join_the_synthetic_layout_as_a_fourth_plate() {
    let dsb = crate::test_python::repo_root().join("tests/data/dsb2018_stage1_test");
    let ds = crate::dsb::DsbDataset::read(
        &dsb.join("stage1_solution_subset.csv"),
        &dsb.join("images"),
        crate::skip::Strictness::Strict,
    )
    .unwrap();
    let size = ImageSize::new(256, 256);
    let real: Vec<_> = (0..ds.images.len())
        .filter(|&i| ds.images[i].instances.image_size == size)
        .take(3)
        .map(|i| ds.load(i).unwrap())
        .collect();
    assert_eq!(real.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let layout =
        synthetic::SartoriusLayout { images: 6, test_images: 1, size, seed: 2, real: real.clone() };
    let summary = synthetic::generate_sartorius_layout(dir.path(), &layout).unwrap();
    let back = SartoriusDataset::read(dir.path(), &SartoriusOptions::validation()).unwrap();
    assert_eq!((summary.images, back.images.len()), (9, 9));
    for (j, r) in real.iter().enumerate() {
        let i =
            back.images.iter().position(|b| b.id == r.id).expect("a real image is in train.csv");
        let b = &back.images[i];
        assert_eq!(b.cell_type, CellType::Shsy5y);
        let well = ["A1", "A1", "A2"][j];
        assert_eq!(b.plate_well.as_deref(), Some(format!("dsb2018[nuclei]_{well}").as_str()));
        assert_eq!(b.instances.masks, r.instances.masks, "{}", r.id);
        assert_eq!(back.load(i).unwrap().image, r.image.to_gray());
    }
    let folds = back.group_kfold(4).unwrap();
    let of = |id: &str| folds[back.images.iter().position(|b| b.id == id).unwrap()];
    assert_eq!(of(&real[0].id), of(&real[1].id));
    // The same real image twice: refused before anything is written.
    let twice = dir.path().join("twice");
    let layout =
        synthetic::SartoriusLayout { real: vec![real[0].clone(), real[0].clone()], ..layout };
    let e = synthetic::generate_sartorius_layout(&twice, &layout).unwrap_err();
    assert!(matches!(&e, Error::DuplicateImage { id, .. } if *id == real[0].id), "{e}");
    assert!(!twice.exists());
}
