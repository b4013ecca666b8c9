"""AU label files that are not UTF-8 text: one DataError naming file and line; the files are left as they were."""

from __future__ import annotations

import pytest

from facerep.errors import DataError
from facerep_action_units.readers import read_bp4d_csv, read_disfa_au


def test_non_utf8_disfa_and_bp4d_files_name_file_and_line_and_are_left_unchanged(tmp_path):
    disfa = tmp_path / "SN001_au1.txt"
    disfa.write_bytes(b"1,0\n2,\x961\n")
    with pytest.raises(DataError, match=r"SN001_au1\.txt: line 2: not UTF-8 text \(byte 0x96 at offset 6\)"):
        read_disfa_au(disfa)
    assert disfa.read_bytes() == b"1,0\n2,\x961\n"
    bp4d = tmp_path / "F001_T1.csv"
    raw = b"0,1,2,4,6,7,10,12,14,15,17,23,24\n1,0,0,0,0,0,0,0,0,0,0,0,0\n\xfe\n"
    bp4d.write_bytes(raw)
    with pytest.raises(DataError, match=r"F001_T1\.csv: line 3: not UTF-8"):
        read_bp4d_csv(bp4d)
    assert bp4d.read_bytes() == raw
