"""`as_python`: plain Python from numpy (parquet rows through pandas), tensors and TransferQueue's columns."""

import json

import numpy as np
import torch
from tensordict import NonTensorData, NonTensorStack

from mempo_verl.values import as_python


def test_numpy_tuples_and_mappings_become_plain_python_recursively():
    row = {"target": np.array([np.array(["Paris", "City of Paris"], dtype=object)], dtype=object), 3: (1, np.int64(2))}
    out = as_python(row)
    assert out == {"target": [["Paris", "City of Paris"]], "3": [1, 2]}
    assert type(out["3"][1]) is int and out == json.loads(json.dumps(out))
    assert as_python(np.float32(0.5)) == 0.5 and type(as_python(np.float32(0.5))) is float
    assert as_python(torch.tensor([1, 2])) == [1, 2]
    assert as_python("text") == "text" and as_python(b"raw") == b"raw" and as_python(None) is None


def test_a_transfer_queue_column_is_read_as_its_list_not_as_a_mapping():
    column = NonTensorStack(NonTensorData({"turn": np.int64(1)}), NonTensorData({"turn": 2}))
    assert as_python(column) == [{"turn": 1}, {"turn": 2}]
