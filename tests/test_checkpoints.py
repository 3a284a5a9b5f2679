import os
import pickle

import pytest
import torch

from core.models.checkpoints import CheckpointError, apply_state_dict, read_checkpoint, save_checkpoint


class _Payload:
    """Unpickling this would create a file: the attack a weights-only load must refuse."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the attacker's protocol
def test_code_in_a_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="only opens weights-only checkpoints"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_truncated_empty_oversized_and_foreign_files(tmp_path, monkeypatch):
    good = tmp_path / "good.safetensors"
    save_checkpoint(torch.nn.Linear(4, 3), good, {"config": {}})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(text)
    monkeypatch.setenv("STITCHLAB_MAX_CHECKPOINT_MB", "0.0001")
    with pytest.raises(CheckpointError, match="over the 0 MB limit"):
        read_checkpoint(good)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pt")


def test_torch_file_holding_a_non_state_dict(tmp_path):
    f = tmp_path / "list.pt"
    torch.save([1, 2, 3], f)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        read_checkpoint(f)


def test_round_trip_keeps_metadata_and_fp16(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"config": {"arch": "x"}, "dataset": "d"})
    state, meta = read_checkpoint(path)
    assert meta == {"config": {"arch": "x"}, "dataset": "d"}
    assert state["0.weight"].dtype == torch.float16 and state["1.num_batches_tracked"].dtype == torch.int64


def test_state_dict_mismatch_names_the_keys():
    model = torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match=r"wrong shapes \(file vs model\): weight \(3, 5\) vs \(3, 4\)"):
        apply_state_dict(model, {"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}, "x.pt")
    with pytest.raises(CheckpointError, match="unexpected keys: extra"):
        apply_state_dict(model, {**model.state_dict(), "extra": torch.zeros(1)}, "x.pt")
