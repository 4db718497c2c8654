use super::*;
use crate::coco::CocoFile;
use crate::synthetic;
use crate::test_python::{assert_masks_match, realdata, reference};
use cellseg_core::CellType;

#[test]
fn real_livecell_jsons_and_lzw_tiffs_match_pycocotools() {
    let Some(root) = realdata() else { return };
    let lc = root.join("livecell");
    let mut total = 0;
    for (json, n_images) in
        [("livecell_coco_test_subset.json", 11), ("livecell_coco_val_subset.json", 5)]
    {
        let json = lc.join(json);
        let ds = LivecellDataset::read(&json, &lc.join("images"), Strictness::Strict).unwrap();
        assert_eq!(ds.images.len(), n_images);
        let want = reference("coco", &json, &[]);
        for im in &ds.images {
            assert_masks_match(&im.file_name, &im.instances.masks, &want[&im.id]);
            assert!(im.instances.labels.iter().all(|&l| l == im.class.label()));
            let s = im.to_sample().unwrap();
            assert_eq!((s.image.size(), s.image.channels()), (ImageSize::new(520, 704), 1));
            total += im.instances.len();
        }
    }
    assert_eq!(total, 3483);
}

#[test]
fn real_sartorius_coco_files_decode_like_pycocotools() {
    let Some(root) = realdata() else { return };
    let dir = root.join("sartorius/annotations/coco");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 8);
    let dir_tmp = tempfile::tempdir().unwrap();
    let list = dir_tmp.path().join("files.txt");
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(&list, names.join("\n")).unwrap();
    // one Python run for all files: masks of the first 4 images of each (keeps the test short)
    let want = reference("coco-list", &list, &["--max-images", "4"]);
    let mut total = 0;
    for (f, name) in files.iter().zip(&names) {
        // every annotation of every file decodes
        let coco = CocoFile::read(f, Strictness::Strict).unwrap();
        total += coco.images.iter().map(|i| i.instances.len()).sum::<usize>();
        for im in coco.images.iter().take(4) {
            assert_masks_match(
                &format!("{name} {}", im.id),
                &im.instances.masks,
                &want[name][&im.id],
            );
        }
    }
    assert!(total >= 41_425, "{total}");
}

#[test]
fn synthetic_livecell_layout_round_trips_with_the_dict_quirk() {
    let dir = tempfile::tempdir().unwrap();
    let summary = synthetic::generate_livecell(dir.path(), 7, 11).unwrap();
    let ann = dir.path().join("annotations/LIVECell");
    let train_text = std::fs::read_to_string(ann.join("livecell_coco_train.json")).unwrap();
    assert!(train_text.contains("\"annotations\":{"), "train json uses the dict quirk");
    let mut n = 0;
    for split in ["train", "val", "test"] {
        let ds = LivecellDataset::read(
            &ann.join(format!("livecell_coco_{split}.json")),
            &dir.path().join("images"),
            Strictness::Strict,
        )
        .unwrap();
        for im in &ds.images {
            // the file name carries the cell line; the generator is deterministic per image index
            let i = im.id.parse::<usize>().unwrap() - 1000;
            let t = CellType::ALL[i % 3];
            assert_eq!(im.class, synthetic::livecell_class(t));
            let (image, cells) = synthetic::generate_cells(t, synthetic::FRAME, 11 + 1 + i as u64);
            assert_eq!(im.load_image().unwrap(), image);
            let masks: Vec<_> = cells.into_iter().map(|c| c.mask).collect();
            assert_eq!(im.instances.masks, masks);
            n += im.instances.len();
        }
    }
    assert_eq!(n, summary.instances);
}

fn tiny_livecell(ann: &str, tif: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img_dir = dir.path().join("images/livecell_test_images");
    std::fs::create_dir_all(&img_dir).unwrap();
    let p = img_dir.join("A172_Phase_C7_1_00d00h00m_1.tif");
    match tif {
        Some(b) => std::fs::write(&p, b).unwrap(),
        None => crate::raster::write_tiff_lzw(&Image::filled(ImageSize::new(20, 30), 1, 90), &p)
            .unwrap(),
    }
    let json = dir.path().join("livecell_coco_test.json");
    let text = format!(
        r#"{{"categories":[{{"id":1,"name":"cell"}}],"images":[{{"id":5,"width":30,"height":20,"file_name":"A172_Phase_C7_1_00d00h00m_1.tif"}}],"annotations":[{{"id":1,"image_id":5,"category_id":1,"segmentation":[[1,1,8,1,8,6,1,6]],"bbox":[1,1,7,5],"iscrowd":0}},{ann}]}}"#
    );
    std::fs::write(&json, text).unwrap();
    (dir, json)
}

#[test]
fn bad_annotations_and_images_name_the_json_and_the_id() {
    let good =
        r#"{"id":2,"image_id":5,"category_id":1,"segmentation":[[10,10,15,10,15,15]],"iscrowd":0}"#;
    let cases = [
        (
            "outside",
            r#"{"id":2,"image_id":5,"category_id":1,"segmentation":[[10,10,95,10,15,15]]}"#,
            "annotation 2",
        ),
        (
            "rle size",
            r#"{"id":2,"image_id":5,"category_id":1,"segmentation":{"size":[21,30],"counts":[600]}}"#,
            "annotation 2",
        ),
        (
            "rle counts",
            r#"{"id":2,"image_id":5,"category_id":1,"segmentation":{"size":[20,30],"counts":[10,5]}}"#,
            "annotation 2",
        ),
        (
            "short polygon",
            r#"{"id":2,"image_id":5,"category_id":1,"segmentation":[[10,10,15,10]]}"#,
            "annotation 2",
        ),
        (
            "unknown image",
            r#"{"id":2,"image_id":6,"category_id":1,"segmentation":[[10,10,15,10,15,15]]}"#,
            "annotation 2",
        ),
    ];
    for (what, ann, row) in cases {
        let (dir, json) = tiny_livecell(ann, None);
        let err = LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Strict)
            .unwrap_err()
            .to_string();
        assert!(err.contains("livecell_coco_test.json") && err.contains(row), "{what}: {err}");
        let ds =
            LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Lenient).unwrap();
        assert_eq!(ds.skipped.len(), 1, "{what}");
        assert_eq!(ds.images[0].instances.len(), 1, "{what}: the good annotation stays");
    }
    let (dir, json) = tiny_livecell(good, None);
    let ds = LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Strict).unwrap();
    assert_eq!(ds.images[0].instances.len(), 2);
    assert_eq!(ds.images[0].class, LivecellClass::A172);
    // corrupt and missing TIFFs
    let (dir, json) = tiny_livecell(good, Some(b"II*\x00\x08\x00\x00\x00garbage"));
    let err =
        LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Strict).unwrap_err();
    assert!(matches!(err, Error::ImageDecode { .. }) && err.to_string().contains(".tif"), "{err}");
    assert_eq!(
        LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Lenient)
            .unwrap()
            .skipped[0]
            .row,
        "image 5"
    );
    std::fs::remove_file(
        dir.path().join("images/livecell_test_images/A172_Phase_C7_1_00d00h00m_1.tif"),
    )
    .unwrap();
    let err =
        LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Strict).unwrap_err();
    assert!(
        matches!(err, Error::MissingImage { .. }) && err.to_string().contains("image 5"),
        "{err}"
    );
    // malformed JSON names the file
    std::fs::write(&json, "{\"images\": [").unwrap();
    let err =
        LivecellDataset::read(&json, &dir.path().join("images"), Strictness::Strict).unwrap_err();
    assert!(err.to_string().contains("livecell_coco_test.json"), "{err}");
}
