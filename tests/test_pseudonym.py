from __future__ import annotations

from pathlib import Path

import pytest

from hindsight.daemon.pseudonym import KEY_NAME, Pseudonyms
from hindsight.errors import HindsightError


def test_the_key_is_made_once_private_and_gives_the_same_ref_after_a_restart(
    tmp_path: Path,
) -> None:
    first = Pseudonyms.open(tmp_path).ref("+31205550199")
    assert (tmp_path / KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert Pseudonyms.open(tmp_path).ref("+31205550199") == first
    assert "5550199" not in first and len(first) == 64


def test_a_number_is_one_caller_however_it_is_written() -> None:
    names = Pseudonyms(b"k" * 32)
    ref = names.ref("+31205550199")
    assert names.ref("+31 20 555-0199") == names.ref("(+31) 20.555.0199") == ref
    assert names.ref("+31205550198") != ref


def test_another_key_gives_other_refs() -> None:
    assert Pseudonyms(b"a" * 32).ref("+3120") != Pseudonyms(b"b" * 32).ref("+3120")


def test_a_damaged_key_file_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_NAME).write_bytes(b"short")
    with pytest.raises(HindsightError, match="not a caller key"):
        Pseudonyms.open(tmp_path)
    assert (tmp_path / KEY_NAME).read_bytes() == b"short"
