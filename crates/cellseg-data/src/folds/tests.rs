use super::*;
use crate::test_python::run_tool;

#[test]
fn greedy_assignment_by_hand() {
    // sizes: a=3, b=2, c=2, d=1; stable-reversed order: a, c, b, d
    let groups = ["a", "a", "a", "b", "b", "c", "c", "d"];
    let folds = group_kfold(&groups, 2).unwrap();
    // a -> 0, c -> 1, b -> 1, d -> 0
    assert_eq!(folds, vec![0, 0, 0, 1, 1, 1, 1, 0]);
    assert!(matches!(group_kfold(&groups, 5), Err(Error::TooFewGroups { n_groups: 4, .. })));
}

#[test]
fn group_kfold_equals_scikit_learn() {
    // Many random group layouts with ties, as plate_well strings.
    let mut cases = Vec::new();
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for case in 0..40 {
        let n_groups = 5 + next() % 40;
        let n = n_groups + next() % 400;
        let groups: Vec<String> = (0..n)
            .map(|i| {
                let g = if i < n_groups { i } else { next() % n_groups };
                format!("plate{}[x]_W{}", g % 3, g * 7 % 97 + case)
            })
            .collect();
        cases.push(groups);
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("groups.json");
    std::fs::write(&input, serde_json::to_string(&cases).unwrap()).unwrap();
    let output = dir.path().join("folds.json");
    run_tool("data_group_kfold.py", &[input.to_str().unwrap(), output.to_str().unwrap()]);
    let want: Vec<Vec<usize>> =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    for (groups, want) in cases.iter().zip(want) {
        assert_eq!(group_kfold(groups, 5).unwrap(), want);
    }
}

#[test]
fn fold_csv_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("folds.csv");
    std::fs::write(&p, "id,fold\nb,1\na,0\n").unwrap();
    assert_eq!(read_fold_csv(&p, &["a", "b"]).unwrap(), vec![0, 1]);
    let err = read_fold_csv(&p, &["a"]).unwrap_err().to_string();
    assert!(err.contains("folds.csv line 2") && err.contains("\"b\""), "{err}");
    let err = read_fold_csv(&p, &["a", "b", "c"]).unwrap_err().to_string();
    assert!(err.contains("no fold for image c"), "{err}");
    std::fs::write(&p, "id,fold\na,x\n").unwrap();
    let err = read_fold_csv(&p, &["a"]).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("fold"), "{err}");
    assert_eq!(split_indices(&[0, 1, 0], 0), (vec![1], vec![0, 2]));
}

#[test]
fn a_fold_split_round_trips_and_names_the_first_differing_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = |folds: Vec<usize>| {
        FoldSplit::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec!["g1".into(), "g2".into(), "g2".into()],
            folds,
            2,
        )
    };
    let split = s(vec![0, 1, 1]).unwrap();
    let path = dir.path().join("folds.csv");
    split.write(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "id,group,fold\na,g1,0\nb,g2,1\nc,g2,1\n");
    let back = FoldSplit::read(&path).unwrap();
    assert_eq!(back, split);
    assert_eq!(back.fold_ids(1), ["b", "c"]);
    assert_eq!(back.fold_of("a"), Some(0));
    back.check_same(&split, &path).unwrap();
    let other = s(vec![1, 0, 0]).unwrap();
    let e = back.check_same(&other, &path).unwrap_err().to_string();
    assert!(
        e.contains("folds.csv") && e.contains("image a is in fold 0 there but in fold 1 here"),
        "{e}"
    );
    let fewer =
        FoldSplit::new(vec!["a".into(), "b".into()], vec!["g1".into(), "g2".into()], vec![0, 1], 2)
            .unwrap();
    let e = back.check_same(&fewer, &path).unwrap_err().to_string();
    assert!(e.contains("image c is recorded there but not in this split"), "{e}");
    // Bad splits and files.
    assert!(s(vec![0, 0, 0]).unwrap_err().to_string().contains("fold 1 of 2 is empty"));
    assert!(s(vec![0, 2, 1]).is_err());
    std::fs::write(&path, "id,group,fold\na,g,0\na,g,1\n").unwrap();
    let e = FoldSplit::read(&path).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("listed twice"), "{e}");
    std::fs::write(&path, "id,group,fold\na,g,x\n").unwrap();
    assert!(FoldSplit::read(&path).unwrap_err().to_string().contains("line 2"));
}
