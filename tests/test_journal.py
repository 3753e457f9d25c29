"""A journal file with a torn last line (a process killed, or the disk full, in the middle of an append) is
repaired on opening and while in use; damage in the middle is a clear error."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from optuna.trial import TrialState

from automlp.errors import StorageError
from automlp.storage import open_storage
from parallel_util import finish, start, states, trials_of, write_spec

TORN = b'{"op_code":5,"worker_id":"0f1e-dead","trial_id":1,"state":1,"val'


def _journal_with_trials(tmp_path, n=2):
    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal://{path}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
    return path


def _records(path):
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]  # every line parses


def _backups(path):
    return sorted(path.parent.glob("study.journal.torn-*"))


def test_a_torn_last_line_is_moved_aside_and_every_complete_record_kept(tmp_path):
    path = _journal_with_trials(tmp_path)
    n_records = len(_records(path))
    with open(path, "ab") as f:
        f.write(TORN)
    storage = open_storage(f"journal://{path}")
    [backup] = _backups(path)
    assert backup.read_bytes() == TORN
    assert storage.notes == [f"{path} ended in an incomplete record ({len(TORN)} bytes, left by a process stopped "
                             f"while writing); kept every complete record and moved the torn bytes to {backup}"]
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert len(_records(path)) > n_records


def test_torn_bytes_with_a_record_glued_on_are_cut_back_to_the_last_good_line(tmp_path):
    """What today's Optuna leaves after a torn tail: the next append glued to it, on one unreadable line."""
    path = _journal_with_trials(tmp_path)
    good = path.read_bytes()
    glued = TORN + b'{"op_code":0,"worker_id":"x","study_name":"t","directions":[1]}\n'
    path.write_bytes(good + glued + b'{"op_code":5,"worker')
    storage = open_storage(f"journal://{path}")
    [backup] = _backups(path)
    assert path.read_bytes() == good and backup.read_bytes() == glued + b'{"op_code":5,"worker'
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
    assert len(storage.notes) == 1


def test_a_writer_that_dies_mid_append_while_others_run_does_not_corrupt_their_next_records(tmp_path):
    path = _journal_with_trials(tmp_path)
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal://{path}"))  # open: clean
    with open(path, "ab") as f:
        f.write(TORN)  # another process dies in the middle of its append
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    _records(path)
    assert [b.read_bytes() for b in _backups(path)] == [TORN]
    fresh = optuna.load_study(study_name="s", storage=open_storage(f"journal://{path}"))
    assert [t.state for t in fresh.trials] == [TrialState.COMPLETE] * 4


def test_damage_in_the_middle_is_an_error_naming_the_file_the_line_and_what_to_restore(tmp_path):
    path = _journal_with_trials(tmp_path)
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3][:20]  # a line cut short in the middle of the file
    path.write_bytes(b"\n".join(lines))
    following = sum(1 for x in lines[4:] if x)
    with pytest.raises(StorageError) as info:
        optuna.load_study(study_name="s", storage=open_storage(f"journal://{path}"))
    msg = str(info.value)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: line 4 is not a complete record \(.+\) and {following} lines follow "
        r"it; automlp repairs only a torn last line. The journal is damaged in the middle: restore it from your "
        r"backup of study.journal, or keep the 3 records before it \(head -n 3 study.journal > kept && mv kept "
        r"study.journal\)", msg), msg


@pytest.mark.slow
def test_search_on_a_journal_with_a_torn_tail_completes_with_a_note(tmp_path):
    spec = write_spec(tmp_path, "torn", n_trials=2)
    cmd = ("search", str(spec), "-q", "--no-report", "--no-export")
    [(rc, out, err)] = finish([start(*cmd, cwd=tmp_path)])
    assert rc == 0, err
    path = tmp_path / "studies" / "torn" / "study.journal"
    with open(path, "ab") as f:
        f.write(TORN)
    [(rc, out, err)] = finish([start(*cmd, "--n-trials", "4", cwd=tmp_path)])
    assert rc == 0, err
    [backup] = _backups(path)
    assert f"note: {path} ended in an incomplete record ({len(TORN)} bytes" in err
    assert f"moved the torn bytes to {backup}" in err and backup.read_bytes() == TORN
    assert states(trials_of("torn", f"journal://{path}")) == {"COMPLETE": 4}
