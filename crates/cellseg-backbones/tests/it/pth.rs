//! The `.pth` reader against `tools/export_weights.py` (PyTorch's own `torch.load`): files that
//! `torch.save` wrote in `.venv` (`tools/backbones_fixtures.py pth-formats`) give the same
//! names, dtypes, shapes and bytes as the safetensors file the script converts them to; files
//! that are not state_dicts, or are cut short, are errors naming the file.

use std::path::Path;

use cellseg_backbones::pth::{Format, read_state_dict};
use cellseg_backbones::{Error, checkpoint};
use tch::Tensor;

fn export(pth: &Path) -> std::path::PathBuf {
    let out = pth.with_extension("safetensors");
    cellseg_core::testing::run_tool(
        "export_weights.py",
        &["mmdet", pth.to_str().unwrap(), out.to_str().unwrap()],
    );
    out
}

/// Same names in the same order, and for each the same dtype, shape and values, bit for bit.
fn assert_same(got: &[(String, Tensor)], want: &[(String, Tensor)], what: &str) {
    let mut want: Vec<&(String, Tensor)> = want.iter().collect();
    let mut got_sorted: Vec<&(String, Tensor)> = got.iter().collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let names = |v: &[&(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got_sorted), names(&want), "{what}: names");
    for ((name, g), (_, w)) in got_sorted.iter().zip(&want) {
        assert_eq!(g.kind(), w.kind(), "{what}: {name} dtype");
        assert_eq!(g.size(), w.size(), "{what}: {name} shape");
        assert!(g.is_contiguous(), "{what}: {name} not contiguous");
        assert!(g.equal(w), "{what}: {name} values differ");
    }
}

#[test]
fn pth_files_read_as_torch_load_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    crate::run_fixture_script(&["pth-formats", dir.path().to_str().unwrap()]);
    let zip = read_state_dict(dir.path().join("plain_zip.pth")).unwrap();
    assert_eq!(zip.format, Format::Zip);
    assert_eq!(zip.location, "the saved dict");
    // The file's own order.
    assert_eq!(zip.tensors[0].0, "dtype.f32");
    assert_eq!(zip.tensors.len(), 16);
    for (file, format, location) in [
        ("plain_zip", Format::Zip, "the saved dict"),
        ("plain_legacy", Format::Legacy, "the saved dict"),
        ("plain_protocol4", Format::Zip, "the saved dict"),
        ("mmcv_zip", Format::Zip, "its \"state_dict\" entry"),
        ("mmcv_legacy", Format::Legacy, "its \"state_dict\" entry"),
    ] {
        let pth = dir.path().join(format!("{file}.pth"));
        let sd = read_state_dict(&pth).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((sd.format, sd.location.as_str()), (format, location), "{file}");
        let want = checkpoint::read(export(&pth)).unwrap();
        assert_same(&sd.tensors, &want, file);
        // checkpoint::read tells the formats apart by their first bytes.
        assert_same(&checkpoint::read(&pth).unwrap(), &want, file);
    }
    // A few values by hand: the views of one storage.
    let t = |name: &str| &zip.tensors.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(Vec::<f32>::try_from(t("view.rows").flatten(0, -1)).unwrap()[0], 6.0);
    assert_eq!(t("view.transposed").size(), [6, 4]);
    assert_eq!(t("view.transposed").double_value(&[0, 1]), 6.0);
    assert_eq!(Vec::<f32>::try_from(t("view.strided")).unwrap(), [0.0, 5.0, 10.0, 15.0, 20.0]);
    assert_eq!(t("scalar").size(), Vec::<i64>::new());
    assert_eq!(t("empty").size(), [0, 3]);
    assert_eq!(t("param").double_value(&[1, 1]), 7.0);

    // Not state_dicts: what the file holds is named.
    for (file, says) in [
        ("whole_module", "torch.nn.modules.container.Sequential object"),
        ("list", "the saved object is list"),
        ("not_tensors", "entry \"epoch\" of the saved dict is int, not a tensor"),
    ] {
        let pth = dir.path().join(format!("{file}.pth"));
        let err = read_state_dict(&pth).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotAStateDict { .. }), "{file}: {msg}");
        assert!(msg.contains(says) && msg.contains(&pth.display().to_string()), "{file}: {msg}");
    }
    // Truncated files (two thirds kept): an error naming the file, never a panic or a short read.
    for file in ["plain_zip_truncated", "plain_legacy_truncated"] {
        let pth = dir.path().join(format!("{file}.pth"));
        let err = read_state_dict(&pth).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Pth { .. }), "{file}: {msg}");
        assert!(msg.contains(&pth.display().to_string()), "{file}: {msg}");
        eprintln!("{file}: {msg}");
    }
}

#[test]
fn files_that_are_not_torch_save_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, says) in [
        ("empty.pth", Vec::new(), "neither a zip archive nor a pickle"),
        (
            "text.pth",
            b"model = dict(type='MaskRCNN')".to_vec(),
            "neither a zip archive nor a pickle",
        ),
        ("zip.pth", b"PK\x03\x04 not really".to_vec(), "zip archive that cannot be read"),
        // A plain pickle of the int 1, not torch.save's magic number.
        ("pickle.pth", b"\x80\x02K\x01.".to_vec(), "without torch.save's magic number"),
        ("garbage.pth", vec![0x80, 0x02, 0xff, 0xff], "opcode"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_state_dict(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(says) && msg.contains(&path.display().to_string()), "{name}: {msg}");
    }
    let err = read_state_dict(dir.path().join("absent.pth")).unwrap_err();
    assert!(err.to_string().contains("absent.pth"), "{err}");
}
