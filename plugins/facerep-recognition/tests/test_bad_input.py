"""LFW pair lists that are not UTF-8 text: one DataError naming file and line; the file is left as it was."""

from __future__ import annotations

import pytest

from facerep.errors import DataError
from facerep_recognition.lfw import LFW, LFWParams, read_pair_list


def test_non_utf8_pair_list_names_file_and_line_and_is_left_unchanged(tmp_path):
    pairs = tmp_path / "pairsDevTest.txt"
    raw = b"1\nAaron_Peirsol\t1\t2\nJos\xe9_Maria\t1\tZico\t2\n"  # a Latin-1 name on line 3
    pairs.write_bytes(raw)
    with pytest.raises(DataError, match=r"pairsDevTest\.txt: line 3: not UTF-8 text \(byte 0xe9 at offset 23\)"):
        read_pair_list(pairs)
    with pytest.raises(DataError, match=r"pairsDevTest\.txt: line 3"):
        LFW(LFWParams(root=str(tmp_path)))
    assert pairs.read_bytes() == raw
    pairs.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\xe9", b"e").replace(b"\n", b"\r\n"))  # BOM + CRLF are fine
    plist = read_pair_list(pairs)
    assert plist.entries == [("Aaron_Peirsol", 1, "Aaron_Peirsol", 2), ("Jose_Maria", 1, "Zico", 2)]
