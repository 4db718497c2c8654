#!/usr/bin/env python
"""Reference folds for cellseg-data's group_kfold test.

Usage: data_group_kfold.py GROUPS_JSON OUT_JSON
GROUPS_JSON holds a list of cases, each a list of group names (one per sample). OUT_JSON receives,
per case, the fold of each sample from sklearn.model_selection.GroupKFold(n_splits=5).
"""
import json
import sys

import numpy as np
from sklearn.model_selection import GroupKFold


def main() -> None:
    cases = json.load(open(sys.argv[1]))
    out = []
    for groups in cases:
        folds = np.full(len(groups), -1, dtype=int)
        for k, (_, val) in enumerate(GroupKFold(n_splits=5).split(np.zeros(len(groups)), groups=groups)):
            folds[val] = k
        out.append(folds.tolist())
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
