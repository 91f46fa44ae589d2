from __future__ import annotations

from pathlib import Path

import pytest

from hindsight.config import (
    DEFAULT_CONFIG_PATH,
    AudioConfig,
    BufferConfig,
    ClientConfig,
    DaemonConfig,
    DeviceConfig,
    LineConfig,
    MarkingConfig,
    PurposeConfig,
    RetentionConfig,
    SamplingConfig,
    is_loopback,
    load_config,
    parse_config,
    read_control_endpoint,
    resolve_config_path,
)
from hindsight.errors import ConfigError

# The contract's example, verbatim but for the alignment of one comment (line length).
CONTRACT_EXAMPLE = """\
[daemon]
state_dir = "/var/lib/hindsight"            # recordings/ and commit.log live here
control = "ipc:///run/hindsight/control.sock" # ZeroMQ endpoint the daemon binds (ipc:// or tcp://)

[audio]
source = "sounddevice" # "sounddevice" (PortAudio) | "file" (a WAV/FLAC looped as live input, paced
                       # in real time) | "synthetic" (generated signal, no hardware)
device = ""              # sounddevice device name or index; "" = the default input
file = ""                # for source = "file"
samplerate = 16000
channels = 2             # channels opened on the device
blocksize = 320          # frames per block

[buffer]
max_call_seconds = 7200  # a longer call rolls: its oldest audio is overwritten (see rolled_seconds)
memory_mb = 1024         # the in-memory pool that all live calls share

[sampling]
one_in = 10              # each call is kept for `purpose` with probability 1/one_in; 0 = never
purpose = "training"

[marking]
purpose = "escalation"   # purpose of the record key when the agent names none

[[lines]]
name = "desk-01"
channels = [1, 2]        # 1-based device channels of this line, e.g. agent and customer

[purposes.training]
legal_basis = "legitimate-interest"
retention_days = 92

[purposes.escalation]
legal_basis = "contract"
retention_days = 730
"""

# The contract's "Purposes and retention" example, verbatim but for the alignment of one comment.
PURPOSES_EXAMPLE = """\
[purposes.training]
legal_basis = "legitimate-interest"
retention_days = 7              # ends this long after the call ended; fractions allowed
max_retention_days = 92 # optional: `extend` never goes past this, counted from the call's end

[purposes.escalation]
legal_basis = "legitimate-interest"
until_resolved = true           # kept until `resolve`, then `grace_days` more (fractions allowed)
grace_days = 30
max_retention_days = 2555       # optional: even unresolved, due then (a legal hold still wins)

[retention]
purge_interval_seconds = 3600   # the daemon purges due recordings by itself this often

[[lines]]
name = "desk-01"
channels = [1, 2]
announced = ["training", "escalation"]   # purposes the caller is told of; default: every purpose
"""

DEFAULT_TRAINING = PurposeConfig(
    name="training",
    legal_basis="legitimate-interest",
    retention_days=92.0,
    until_resolved=False,
    grace_days=0.0,
    max_retention_days=None,
)
DEFAULT_ESCALATION = PurposeConfig(
    name="escalation",
    legal_basis="contract",
    retention_days=730.0,
    until_resolved=False,
    grace_days=0.0,
    max_retention_days=None,
)

ONE_LINE = """\
[[lines]]
name = "desk-01"
channels = [1, 2]
"""

TWO_DEVICES = """\
[[devices]]
name = "left"
channels = 2

[[devices]]
name = "right"
device = 3
channels = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hindsight.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.problems


def test_contract_example_parses_to_documented_values(tmp_path: Path) -> None:
    path = write(tmp_path, CONTRACT_EXAMPLE)

    config = load_config(path)

    assert config.daemon == DaemonConfig(
        state_dir=Path("/var/lib/hindsight"), control="ipc:///run/hindsight/control.sock"
    )
    assert config.audio == AudioConfig(
        source="sounddevice",
        file=None,
        samplerate=16000,
        blocksize=320,
        devices=(DeviceConfig(name="default", device=None, channels=2),),
    )
    assert config.buffer == BufferConfig(max_call_seconds=7200.0, memory_mb=1024)
    assert isinstance(config.buffer.max_call_seconds, float)
    assert config.sampling == SamplingConfig(one_in=10, purpose="training")
    assert config.marking == MarkingConfig(purpose="escalation")
    assert config.retention == RetentionConfig(purge_interval_seconds=3600.0)
    assert config.lines == (
        LineConfig(
            name="desk-01",
            device="default",
            channels=(1, 2),
            announced=("training", "escalation"),
        ),
    )
    assert config.purposes == (DEFAULT_TRAINING, DEFAULT_ESCALATION)
    assert config.path == path


def test_defaults_fill_everything_but_lines(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ONE_LINE))

    assert config == load_config(write(tmp_path, CONTRACT_EXAMPLE))


def test_lookups_by_name(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ONE_LINE))

    assert config.purpose("escalation") == DEFAULT_ESCALATION
    assert config.purpose("nope") is None
    assert config.line("desk-01") == config.lines[0]
    assert config.line("desk-02") is None
    assert config.device("default").channels == 2
    with pytest.raises(KeyError):
        config.device("nope")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ONE_LINE))

    with pytest.raises(AttributeError):
        config.buffer.memory_mb = 1  # type: ignore[misc]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "call.wav").write_bytes(b"")
    text = (
        '[daemon]\nstate_dir = "state"\ncontrol = "ipc://run/ctl.sock"\n'
        '[audio]\nsource = "file"\nfile = "audio/call.wav"\n' + ONE_LINE
    )

    config = load_config(write(tmp_path, text))

    assert config.daemon.state_dir == tmp_path / "state"
    assert config.daemon.control == f"ipc://{tmp_path}/run/ctl.sock"
    assert config.audio.file == tmp_path / "audio" / "call.wav"


def test_relative_paths_resolve_against_a_relative_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", '[daemon]\nstate_dir = "state"\n' + ONE_LINE)
    monkeypatch.chdir(tmp_path)

    config = load_config(Path("etc/hindsight.toml"))

    assert config.daemon.state_dir == tmp_path / "etc" / "state"


def test_resolved_paths_fold_dot_dot(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    text = '[daemon]\nstate_dir = "../state"\ncontrol = "ipc://../run/ctl.sock"\n' + ONE_LINE

    config = load_config(write(tmp_path / "etc", text))

    assert config.daemon.state_dir == tmp_path / "state"
    assert config.daemon.control == f"ipc://{tmp_path}/run/ctl.sock"


def test_absolute_and_non_ipc_endpoints_are_kept(tmp_path: Path) -> None:
    for endpoint in ("ipc:///abs/ctl.sock", "tcp://127.0.0.1:5555"):
        text = f'[daemon]\ncontrol = "{endpoint}"\n' + ONE_LINE

        assert load_config(write(tmp_path, text)).daemon.control == endpoint


def test_an_abstract_control_socket_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\ncontrol = "ipc://@hindsight"\n' + ONE_LINE)

    [problem] = problems(tmp_path, path.read_text())
    with pytest.raises(ConfigError) as caught:
        read_control_endpoint(path)

    assert problem.startswith("daemon.control: an abstract socket (ipc://@...) has no file")
    assert "anyone on this host could reach" in problem
    assert "give a path" in problem
    assert caught.value.problems == [problem]


def test_parse_config_uses_base_dir_and_keeps_path_none() -> None:
    data = {"daemon": {"state_dir": "state"}, "lines": [{"name": "a", "channels": [1]}]}

    config = parse_config(data, Path("/srv/hs"))

    assert config.daemon.state_dir == Path("/srv/hs/state")
    assert config.path is None


def test_parse_config_makes_a_relative_base_dir_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = {"daemon": {"control": "ipc://ctl.sock"}, "lines": [{"name": "a", "channels": [1]}]}

    config = parse_config(data, Path("etc"))

    assert config.daemon.state_dir == Path("/var/lib/hindsight")
    assert config.daemon.control == f"ipc://{tmp_path}/etc/ctl.sock"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[audio]\nsamplerate = "abc"\n', "audio.samplerate: expected an integer, got str 'abc'"),
        ("[audio]\nsamplerate = 5\n", "audio.samplerate: must be between 8000 and 192000, got 5"),
        ("[audio]\nchannels = true\n", "audio.channels: expected an integer, got bool True"),
        (
            "[audio]\nblocksize = 20000\n",
            "audio.blocksize: must be at most audio.samplerate (16000), got 20000",
        ),
        ("[audio]\nblocksize = 8\n", "audio.blocksize: must be at least 16, got 8"),
        (
            '[audio]\nsource = "alsa"\n',
            "audio.source: must be one of 'sounddevice', 'file', 'synthetic', got 'alsa'",
        ),
        (
            "[audio]\ndevice = 1.5\n",
            "audio.device: expected a device name (string) or index (integer), got float 1.5",
        ),
        ('[daemon]\nstate_dir = ""\n', "daemon.state_dir: must not be empty"),
        (
            '[daemon]\ncontrol = "udp://x"\n',
            "daemon.control: must start with 'ipc://' or 'tcp://', got 'udp://x'",
        ),
        (
            "[buffer]\nmax_call_seconds = 0\n",
            "buffer.max_call_seconds: must be greater than 0 and at most 86400, got 0",
        ),
        (
            "[buffer]\nmax_call_seconds = nan\n",
            "buffer.max_call_seconds: must be greater than 0 and at most 86400, got nan",
        ),
        ("[buffer]\nmemory_mb = 0\n", "buffer.memory_mb: must be between 1 and 1048576, got 0"),
        ("[sampling]\none_in = -1\n", "sampling.one_in: must be at least 0, got -1"),
    ],
)
def test_each_wrong_value_gives_one_exact_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text + ONE_LINE) == [expected]


def test_an_int_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[buffer]\nmax_call_seconds = 30.5\n" + ONE_LINE))

    assert config.buffer.max_call_seconds == 30.5


def test_huge_values_are_clipped_in_messages(tmp_path: Path) -> None:
    text = f'[audio]\nsamplerate = "{"9" * 500}"\n' + ONE_LINE

    [problem] = problems(tmp_path, text)

    assert problem.startswith("audio.samplerate: expected an integer, got str '999")
    assert problem.endswith("...")
    assert len(problem) < 100


def test_audio_file_is_required_for_the_file_source(tmp_path: Path) -> None:
    assert problems(tmp_path, '[audio]\nsource = "file"\n' + ONE_LINE) == [
        "audio.file: required when audio.source is 'file'"
    ]


def test_audio_file_must_exist(tmp_path: Path) -> None:
    text = '[audio]\nsource = "file"\nfile = "missing.wav"\n' + ONE_LINE

    assert problems(tmp_path, text) == [f"audio.file: no such file: {tmp_path / 'missing.wav'}"]


def test_audio_file_is_not_checked_for_other_sources(tmp_path: Path) -> None:
    text = '[audio]\nsource = "synthetic"\nfile = "missing.wav"\n' + ONE_LINE

    assert load_config(write(tmp_path, text)).audio.source == "synthetic"


def test_lines_are_required(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == ["lines: at least one [[lines]] entry is required"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("channels = [1]", "lines[1].name: required, but missing"),
        ('name = "a b"\nchannels = [1]', "lines[1].name: must be 1 to 64 of the characters"),
        ('name = "desk-01"\nchannels = [1]', "lines[1].name: duplicate line name 'desk-01'"),
        ('name = "d2"', "lines[1].channels: required, but missing"),
        ('name = "d2"\nchannels = []', "lines[1].channels: must list at least one channel"),
        ('name = "d2"\nchannels = [1, 1]', "lines[1].channels: channel 1 is listed twice"),
        ('name = "d2"\nchannels = [0]', "lines[1].channels: channel 0 is out of range"),
        (
            'name = "d2"\nchannels = [1, "2"]',
            "lines[1].channels: item 1: expected an integer, got str '2'",
        ),
        (
            'name = "d2"\nchannels = [1, 3]',
            "lines[1].channels: channel 3 is beyond the 2 channels of device 'default'",
        ),
        (
            'name = "d2"\ndevice = "usb"\nchannels = [1]',
            "lines[1].device: unknown device 'usb'; "
            "without [[devices]] the only device is 'default'",
        ),
    ],
)
def test_line_problems_name_the_entry(tmp_path: Path, line: str, expected: str) -> None:
    [problem] = problems(tmp_path, ONE_LINE + "[[lines]]\n" + line + "\n")

    assert problem.startswith(expected)


def test_a_line_with_more_than_8_channels_is_refused(tmp_path: Path) -> None:
    device = "[audio]\nchannels = 16\n"
    eight = '[[lines]]\nname = "wide"\nchannels = [1, 2, 3, 4, 5, 6, 7, 8]\n'
    nine = '[[lines]]\nname = "wide"\nchannels = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n'

    assert len(load_config(write(tmp_path, device + eight)).lines[0].channels) == 8
    assert problems(tmp_path, device + nine) == [
        "lines[0].channels: lists 9 channels, but a FLAC recording holds at most 8"
    ]


@pytest.mark.parametrize("name", [".", "..", ".hidden", ".x.flac"])
def test_call_ids_that_start_with_a_dot_are_refused(tmp_path: Path, name: str) -> None:
    text = (
        f'[sampling]\npurpose = "{name}"\n[marking]\npurpose = "{name}"\n'
        f'[[devices]]\nname = "{name}"\nchannels = 2\n'
        f'[[lines]]\nname = "{name}"\ndevice = "{name}"\nchannels = [1]\n'
        f'[purposes."{name}"]\nlegal_basis = "consent"\nretention_days = 1\n'
    )
    refused = "must be 1 to 64 of the characters A-Z a-z 0-9 . _ - and not start with a dot"

    found = problems(tmp_path, text)

    assert sorted(p.partition(":")[0] for p in found) == [
        "devices[0].name",
        "lines[0].device",
        "lines[0].name",
        "marking.purpose",
        "purposes",
        "sampling.purpose",
    ]
    assert all(refused in problem for problem in found)


def test_ids_may_hold_a_dot_after_the_first_character(tmp_path: Path) -> None:
    text = '[[lines]]\nname = "desk.01"\nchannels = [1]\n'

    assert load_config(write(tmp_path, text)).lines[0].name == "desk.01"


def test_a_line_may_name_the_implicit_default_device(tmp_path: Path) -> None:
    text = '[[lines]]\nname = "a"\ndevice = "default"\nchannels = [2]\n'

    assert load_config(write(tmp_path, text)).lines[0].device == "default"


def test_lines_must_be_an_array_of_tables(tmp_path: Path) -> None:
    assert problems(tmp_path, "lines = [1]\n") == ["lines[0]: expected a table, got int 1"]


def test_purposes_default_only_when_the_table_is_absent(tmp_path: Path) -> None:
    text = ONE_LINE + '[purposes.training]\nlegal_basis = "consent"\nretention_days = 1\n'

    assert problems(tmp_path, text) == [
        "marking.purpose: 'escalation' is not declared under [purposes]"
    ]


def test_purpose_problems(tmp_path: Path) -> None:
    text = (
        ONE_LINE
        + '[purposes.training]\nlegal_basis = "because"\nretention_days = 0\n'
        + "[purposes.escalation]\nretention_days = 1\n"
        + '[purposes."no way"]\nlegal_basis = "contract"\nretention_days = 1\n'
    )

    assert problems(tmp_path, text) == [
        "purposes.training.legal_basis: must be one of 'consent', 'contract', "
        "'legal-obligation', 'vital-interests', 'public-task', 'legitimate-interests', "
        "'legitimate-interest', got 'because'",
        "purposes.training.retention_days: must be greater than 0 and at most 36500, got 0",
        "purposes.escalation.legal_basis: required, but missing",
        "purposes: a purpose name must be 1 to 64 of the characters A-Z a-z 0-9 . _ - "
        "and not start with a dot, got 'no way'",
    ]


def test_the_purposes_and_retention_example_parses_to_documented_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PURPOSES_EXAMPLE))

    assert config.purposes == (
        PurposeConfig(
            name="training",
            legal_basis="legitimate-interest",
            retention_days=7.0,
            until_resolved=False,
            grace_days=0.0,
            max_retention_days=92.0,
        ),
        PurposeConfig(
            name="escalation",
            legal_basis="legitimate-interest",
            retention_days=None,
            until_resolved=True,
            grace_days=30.0,
            max_retention_days=2555.0,
        ),
    )
    assert config.retention == RetentionConfig(purge_interval_seconds=3600.0)
    assert config.lines[0].announced == ("training", "escalation")


def test_purpose_and_retention_defaults(tmp_path: Path) -> None:
    text = ONE_LINE + '[purposes.training]\nlegal_basis = "consent"\nretention_days = 1\n'
    text += '[marking]\npurpose = "training"\n'

    config = load_config(write(tmp_path, text))

    assert config.purposes == (
        PurposeConfig(
            name="training",
            legal_basis="consent",
            retention_days=1.0,
            until_resolved=False,
            grace_days=0.0,
            max_retention_days=None,
        ),
    )
    assert config.retention.purge_interval_seconds == 3600.0


def test_default_purposes_are_training_and_escalation(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ONE_LINE))

    assert config.purposes == (DEFAULT_TRAINING, DEFAULT_ESCALATION)


def test_retention_days_takes_fractions(tmp_path: Path) -> None:
    text = ONE_LINE + "[retention]\npurge_interval_seconds = 0.5\n"
    text += '[sampling]\npurpose = "demo"\n[marking]\npurpose = "demo"\n'
    text += '[purposes.demo]\nlegal_basis = "consent"\nretention_days = 0.0001\n'
    text += "grace_days = 0.5\nmax_retention_days = 0.25\n"

    config = load_config(write(tmp_path, text))

    assert config.purposes[0].retention_days == 0.0001
    assert config.purposes[0].grace_days == 0.5
    assert config.purposes[0].max_retention_days == 0.25
    assert config.retention.purge_interval_seconds == 0.5


def purpose(keys: str) -> str:
    """A file whose one purpose, ``only``, is made of ``keys`` and used for sampling and marks."""
    uses = '[sampling]\npurpose = "only"\n[marking]\npurpose = "only"\n'
    return ONE_LINE + uses + '[purposes.only]\nlegal_basis = "consent"\n' + keys


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            "retention_days = -1\n",
            "purposes.only.retention_days: must be greater than 0 and at most 36500, got -1",
        ),
        (
            "retention_days = 0\n",
            "purposes.only.retention_days: must be greater than 0 and at most 36500, got 0",
        ),
        (
            "retention_days = 36501\n",
            "purposes.only.retention_days: must be greater than 0 and at most 36500, got 36501",
        ),
        (
            "until_resolved = true\ngrace_days = -0.5\n",
            "purposes.only.grace_days: must be at least 0 and at most 36500, got -0.5",
        ),
        (
            "until_resolved = true\nmax_retention_days = -3\n",
            "purposes.only.max_retention_days: must be greater than 0 and at most 36500, got -3",
        ),
        (
            "retention_days = 1\n[retention]\npurge_interval_seconds = -1\n",
            "retention.purge_interval_seconds: must be greater than 0 and at most 43200, got -1",
        ),
        (
            "retention_days = 1\n[retention]\npurge_interval_seconds = 0\n",
            "retention.purge_interval_seconds: must be greater than 0 and at most 43200, got 0",
        ),
        (
            "retention_days = 1\n[retention]\npurge_interval_seconds = 86400\n",
            "retention.purge_interval_seconds: must be greater than 0 and at most 43200, got 86400",
        ),
    ],
)
def test_negative_zero_and_too_large_numbers_are_refused(
    tmp_path: Path, keys: str, expected: str
) -> None:
    assert problems(tmp_path, purpose(keys)) == [expected]


def test_grace_days_may_be_zero(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, purpose("until_resolved = true\ngrace_days = 0\n")))

    assert config.purposes[0].grace_days == 0.0


def test_a_purpose_with_both_retention_rules_is_refused(tmp_path: Path) -> None:
    text = purpose("retention_days = 7\nuntil_resolved = true\n")

    assert problems(tmp_path, text) == [
        "purposes.only: has both retention_days and until_resolved = true; give exactly one"
    ]


@pytest.mark.parametrize("keys", ["", "until_resolved = false\n", "grace_days = 3\n"])
def test_a_purpose_with_neither_retention_rule_is_refused(tmp_path: Path, keys: str) -> None:
    assert problems(tmp_path, purpose(keys)) == [
        "purposes.only: needs retention_days or until_resolved = true (exactly one of them)"
    ]


def test_a_broken_retention_rule_is_reported_once(tmp_path: Path) -> None:
    text = purpose('retention_days = "7"\nuntil_resolved = "yes"\nmax_retention_days = 1\n')

    assert problems(tmp_path, text) == [
        "purposes.only.retention_days: expected a number, got str '7'",
        "purposes.only.until_resolved: expected true or false, got str 'yes'",
    ]


def test_until_resolved_purpose_has_no_retention_days(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, purpose("until_resolved = true\ngrace_days = 30\n")))

    assert config.purposes[0].retention_days is None
    assert config.purposes[0].until_resolved is True
    assert config.purposes[0].grace_days == 30.0


def test_grace_days_is_allowed_with_retention_days(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, purpose("retention_days = 7\ngrace_days = 2\n")))

    assert config.purposes[0].grace_days == 2.0


def test_max_retention_days_must_not_be_below_retention_days(tmp_path: Path) -> None:
    equal = purpose("retention_days = 7\nmax_retention_days = 7\n")
    below = purpose("retention_days = 7.5\nmax_retention_days = 7\n")

    assert load_config(write(tmp_path, equal)).purposes[0].max_retention_days == 7.0
    assert problems(tmp_path, below) == [
        "purposes.only.max_retention_days: must be at least retention_days (7.5), got 7"
    ]


@pytest.mark.parametrize(
    "basis",
    [
        "consent",
        "contract",
        "legal-obligation",
        "vital-interests",
        "public-task",
        "legitimate-interests",
        "legitimate-interest",
    ],
)
def test_every_gdpr_legal_basis_is_accepted(tmp_path: Path, basis: str) -> None:
    text = purpose("retention_days = 1\n").replace('"consent"', f'"{basis}"')

    assert load_config(write(tmp_path, text)).purposes[0].legal_basis == basis


def test_a_legal_basis_typo_suggests_the_nearest(tmp_path: Path) -> None:
    text = purpose("retention_days = 1\n").replace('"consent"', '"contrakt"')

    [problem] = problems(tmp_path, text)

    assert problem.startswith("purposes.only.legal_basis: must be one of 'consent', ")
    assert problem.endswith(", got 'contrakt' (did you mean 'contract'?)")


def test_announced_defaults_to_every_declared_purpose(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PURPOSES_EXAMPLE.replace("announced = ", "# ")))

    assert config.lines[0].announced == ("training", "escalation")


def test_announced_keeps_the_given_order_and_may_be_a_subset(tmp_path: Path) -> None:
    text = ONE_LINE + 'announced = ["escalation"]\n'

    assert load_config(write(tmp_path, text)).lines[0].announced == ("escalation",)


def test_announced_may_be_empty(tmp_path: Path) -> None:
    text = ONE_LINE + "announced = []\n"

    assert load_config(write(tmp_path, text)).lines[0].announced == ()


def test_an_undeclared_announced_purpose_suggests_a_spelling(tmp_path: Path) -> None:
    text = ONE_LINE + 'announced = ["trainig", "escalation", "zzz"]\n'

    assert problems(tmp_path, text) == [
        "lines[0].announced: 'trainig' is not declared under [purposes] (did you mean 'training'?)",
        "lines[0].announced: 'zzz' is not declared under [purposes]",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["training", "training"]', "lines[0].announced: 'training' is listed twice"),
        ('"training"', "lines[0].announced: expected a list of strings, got str 'training'"),
        ('["training", 1]', "lines[0].announced: item 1: expected a string, got int 1"),
        ('[".x"]', "lines[0].announced: item 0: must be 1 to 64 of the characters"),
    ],
)
def test_announced_must_be_a_list_of_distinct_ids(
    tmp_path: Path, value: str, expected: str
) -> None:
    [problem] = problems(tmp_path, ONE_LINE + f"announced = {value}\n")

    assert problem.startswith(expected)


def test_an_unknown_retention_key_suggests_a_spelling(tmp_path: Path) -> None:
    assert problems(tmp_path, "[retention]\npurge_interval = 60\n" + ONE_LINE) == [
        "retention.purge_interval: unknown key (did you mean 'purge_interval_seconds'?)"
    ]


def test_sampling_purpose_must_be_declared(tmp_path: Path) -> None:
    text = '[sampling]\npurpose = "x"\n' + ONE_LINE

    assert problems(tmp_path, text) == ["sampling.purpose: 'x' is not declared under [purposes]"]


def test_sampling_purpose_is_not_checked_when_sampling_is_off(tmp_path: Path) -> None:
    text = '[sampling]\none_in = 0\npurpose = "x"\n' + ONE_LINE

    assert load_config(write(tmp_path, text)).sampling.one_in == 0


def test_undeclared_purpose_suggests_a_spelling(tmp_path: Path) -> None:
    text = '[marking]\npurpose = "escalaton"\n' + ONE_LINE

    assert problems(tmp_path, text) == [
        "marking.purpose: 'escalaton' is not declared under [purposes] (did you mean 'escalation'?)"
    ]


def test_unknown_key_suggests_a_spelling(tmp_path: Path) -> None:
    assert problems(tmp_path, "[audio]\nsamplrate = 8000\n" + ONE_LINE) == [
        "audio.samplrate: unknown key (did you mean 'samplerate'?)"
    ]


def test_unknown_section_suggests_a_spelling(tmp_path: Path) -> None:
    assert problems(tmp_path, "[sampler]\none_in = 3\n" + ONE_LINE) == [
        "sampler: unknown section (did you mean 'sampling'?)"
    ]


def test_unknown_names_without_a_close_match_get_no_suggestion(tmp_path: Path) -> None:
    text = "[zzz]\n[audio]\nqqq = 1\n" + ONE_LINE + "xyz = 2\n"

    assert problems(tmp_path, text) == [
        "zzz: unknown section",
        "audio.qqq: unknown key",
        "lines[0].xyz: unknown key",
    ]


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert problems(tmp_path, "buffer = 5\n" + ONE_LINE) == ["buffer: expected a table, got int 5"]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = """\
[audio]
samplerate = 5
samplrate = 8000

[buffer]
memory_mb = "lots"

[[lines]]
name = "desk-01"
channels = [1, 9]

[[lines]]
name = "desk-01"
channels = [1]
"""

    assert problems(tmp_path, text) == [
        "audio.samplrate: unknown key (did you mean 'samplerate'?)",
        "audio.samplerate: must be between 8000 and 192000, got 5",
        "buffer.memory_mb: expected an integer, got str 'lots'",
        "lines[1].name: duplicate line name 'desk-01'",
        "lines[0].channels: channel 9 is beyond the 2 channels of device 'default'",
    ]


def test_multi_device_form(tmp_path: Path) -> None:
    text = TWO_DEVICES + '[[lines]]\nname = "a"\ndevice = "right"\nchannels = [4, 3]\n'

    config = load_config(write(tmp_path, text))

    assert config.audio.devices == (
        DeviceConfig(name="left", device=None, channels=2),
        DeviceConfig(name="right", device=3, channels=4),
    )
    assert config.lines == (
        LineConfig(name="a", device="right", channels=(4, 3), announced=("training", "escalation")),
    )
    assert config.device(config.lines[0].device).device == 3


def test_a_single_declared_device_is_the_default_for_lines(tmp_path: Path) -> None:
    text = '[[devices]]\nname = "usb"\ndevice = "USB Audio"\nchannels = 1\n[[lines]]\n'
    text += 'name = "a"\nchannels = [1]\n'

    config = load_config(write(tmp_path, text))

    assert config.lines[0].device == "usb"
    assert config.device("usb").device == "USB Audio"


def test_multi_device_errors(tmp_path: Path) -> None:
    text = (
        "[audio]\nchannels = 2\ndevice = 1\n"
        + TWO_DEVICES
        + '[[lines]]\nname = "a"\nchannels = [1]\n'
        + '[[lines]]\nname = "b"\ndevice = "rigth"\nchannels = [1]\n'
        + '[[lines]]\nname = "c"\ndevice = "elsewhere"\nchannels = [1]\n'
        + '[[lines]]\nname = "d"\ndevice = "left"\nchannels = [3]\n'
    )

    assert problems(tmp_path, text) == [
        "audio.device: not allowed with [[devices]]; describe each device there",
        "audio.channels: not allowed with [[devices]]; describe each device there",
        "lines[0].device: required when more than one device is declared",
        "lines[1].device: 'rigth' is not declared under [[devices]] (did you mean 'right'?)",
        "lines[2].device: 'elsewhere' is not declared under [[devices]]",
        "lines[3].channels: channel 3 is beyond the 2 channels of device 'left'",
    ]


def test_device_entry_problems(tmp_path: Path) -> None:
    text = (
        '[[devices]]\nname = "x"\nchannels = 0\n'
        '[[devices]]\nname = "x"\nchannels = 1\ndevice = -1\n'
        "[[devices]]\nchannels = 1\n"
        '[[lines]]\nname = "a"\ndevice = "x"\nchannels = [1]\n'
    )

    assert problems(tmp_path, text) == [
        "devices[0].channels: must be between 1 and 256, got 0",
        "devices[1].device: a device index must be at least 0, got -1",
        "devices[2].name: required, but missing",
        "devices[1].name: duplicate device name 'x'",
    ]


def test_empty_devices_array_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "devices = []\n" + ONE_LINE) == [
        "devices: at least one [[devices]] entry is required"
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert caught.value.problems == [f"{path}: cannot read: No such file or directory"]


def test_invalid_toml(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "[audio\n")

    assert problem.startswith(f"{tmp_path / 'hindsight.toml'}: invalid TOML: ")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hindsight.toml"
    path.write_bytes(b"[daemon]\ncontrol = '\xff'\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: invalid TOML: not UTF-8")


def test_read_control_endpoint_ignores_the_rest_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\ncontrol = "ipc://ctl.sock"\nbogus = 1\n[nonsense]\n')

    assert read_control_endpoint(path) == f"ipc://{tmp_path}/ctl.sock"


def test_read_control_endpoint_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "[audio]\nsamplerate = 1\n")

    assert read_control_endpoint(path) == "ipc:///run/hindsight/control.sock"


def test_read_control_endpoint_refuses_a_bad_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\ncontrol = 5\n")

    with pytest.raises(ConfigError) as caught:
        read_control_endpoint(path)

    assert caught.value.problems == ["daemon.control: expected a string, got int 5"]


def test_read_control_endpoint_refuses_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_control_endpoint(write(tmp_path, "[daemon\n"))


def test_resolve_config_path_prefers_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HINDSIGHT_CONFIG", "/from/env.toml")

    assert resolve_config_path("/from/arg.toml") == Path("/from/arg.toml")


def test_resolve_config_path_uses_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HINDSIGHT_CONFIG", "/from/env.toml")

    assert resolve_config_path(None) == Path("/from/env.toml")


def test_resolve_config_path_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HINDSIGHT_CONFIG", raising=False)

    assert resolve_config_path(None) == DEFAULT_CONFIG_PATH == Path("/etc/hindsight/hindsight.toml")


# --- daemon.listen and [[clients]] ---

KEY_A = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # any 40 characters of Z85 that decode
KEY_B = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
LISTEN = (
    '[daemon]\nlisten = "tcp://0.0.0.0:7700"\ncurve_secret_key_file = "keys/server.key_secret"\n'
)


def client(name: str, key: str, role: str, lines: str = "") -> str:
    return f'\n[[clients]]\nname = "{name}"\npublic_key = "{key}"\nrole = "{role}"\n{lines}'


def test_listen_and_clients_parse(tmp_path: Path) -> None:
    text = LISTEN + ONE_LINE + client("desk-01-pc", KEY_A, "agent", 'lines = ["desk-01"]\n')
    config = load_config(write(tmp_path, text + client("phones", KEY_B, "telephony")))

    assert config.daemon.listen == "tcp://0.0.0.0:7700"
    assert config.daemon.curve_secret_key_file == tmp_path / "keys" / "server.key_secret"
    assert config.daemon.control == "ipc:///run/hindsight/control.sock"
    assert config.clients == (
        ClientConfig("desk-01-pc", KEY_A, "agent", ("desk-01",)),
        ClientConfig("phones", KEY_B, "telephony", ()),
    )


def test_without_listen_or_clients_nothing_changes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ONE_LINE))

    assert (config.daemon.listen, config.daemon.curve_secret_key_file) == (None, None)
    assert config.clients == ()


@pytest.mark.parametrize(
    ("daemon", "expected"),
    [
        (
            'listen = "ipc:///run/x.sock"\ncurve_secret_key_file = "k"\n',
            "daemon.listen: must be 'tcp://ADDRESS:PORT', got 'ipc:///run/x.sock'",
        ),
        (
            'listen = "tcp://"\ncurve_secret_key_file = "k"\n',
            "daemon.listen: must be 'tcp://ADDRESS:PORT', got 'tcp://'",
        ),
        (
            'listen = "tcp://*:7700"\n',
            "daemon.curve_secret_key_file: required with daemon.listen: the key pair "
            "'hindsight keygen --curve -o NAME' writes (NAME.key_secret)",
        ),
        (
            'listen = "tcp://*:7700"\ncurve_secret_key_file = ""\n',
            "daemon.curve_secret_key_file: must not be empty",
        ),
    ],
)
def test_listen_problems(tmp_path: Path, daemon: str, expected: str) -> None:
    assert problems(tmp_path, "[daemon]\n" + daemon + ONE_LINE) == [expected]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            client("a", KEY_A[:39], "agent"),
            "clients[0].public_key: must be a Z85 key of 40 characters, got 39 characters",
        ),
        (
            client("a", KEY_A[:39] + "~", "agent"),
            "clients[0].public_key: must be a Z85 key of 40 characters, got 40 characters",
        ),
        (
            client("a", "#" * 40, "agent"),
            "clients[0].public_key: must be a Z85 key of 40 characters (it does not decode), "
            "got 40 characters",
        ),
        (
            client("a", KEY_A, "agnet"),
            "clients[0].role: must be one of 'telephony', 'agent', 'reviewer', 'auditor', 'admin', "
            "got 'agnet' (did you mean 'agent'?)",
        ),
        (
            client("a", KEY_A, "agent", 'lines = ["desk-1"]\n'),
            "clients[0].lines: 'desk-1' is not declared under [[lines]] (did you mean 'desk-01'?)",
        ),
        (client("a", KEY_A, "agent", 'lines = "desk-01"\n'), "clients[0].lines: expected a list"),
        (client(".a", KEY_A, "admin"), "clients[0].name: must be 1 to 64 of the characters"),
        (
            client("a", KEY_A, "admin", "roles = []\n"),
            "clients[0].roles: unknown key (did you mean 'role'?)",
        ),
        ('\n[[clients]]\nname = "a"\nrole = "admin"\n', "clients[0].public_key: required"),
        ("clients = 3\n", "clients: expected an array of tables ([[clients]]), got int 3"),
    ],
)
def test_client_problems(tmp_path: Path, entry: str, expected: str) -> None:
    text = (
        ONE_LINE.replace("[[lines]]", entry + "\n[[lines]]", 1)
        if entry.startswith("clients =")
        else ONE_LINE + entry
    )
    found = problems(tmp_path, text)

    assert len(found) == 1 and found[0].startswith(expected), found


def test_client_names_and_keys_are_unique(tmp_path: Path) -> None:
    text = ONE_LINE + client("a", KEY_A, "admin") + client("a", KEY_B, "admin")
    text += client("b", KEY_A, "reviewer")

    assert problems(tmp_path, text) == [
        "clients[1].name: duplicate client name 'a'",
        "clients[2].public_key: the same key as client 'a'",
    ]


def test_a_client_key_is_never_echoed(tmp_path: Path) -> None:
    # A secret key pasted by mistake has the same form: no message quotes a key.
    secret = KEY_A[:30] + "(not-z85~"
    [problem] = problems(tmp_path, ONE_LINE + client("a", secret, "admin"))

    assert secret[:10] not in problem


@pytest.mark.parametrize(
    "control",
    ["tcp://0.0.0.0:7000", "tcp://*:7000", "tcp://10.1.2.3:7000", "tcp://eth0:7000", "tcp://h:1"],
)
def test_a_control_socket_off_loopback_needs_a_client_key(tmp_path: Path, control: str) -> None:
    text = f'[daemon]\ncontrol = "{control}"\n' + ONE_LINE
    [problem] = problems(tmp_path, text)

    assert problem.startswith(f"daemon.control: '{control}' is not loopback")
    assert "daemon.listen" in problem and "[[clients]]" in problem
    # Once a client key is configured the contract allows it (the daemon warns at start-up).
    assert (
        load_config(write(tmp_path, text + client("a", KEY_A, "admin"))).daemon.control == control
    )


@pytest.mark.parametrize(
    "control",
    ["tcp://127.0.0.1:7000", "tcp://127.3.2.1:7000", "tcp://localhost:7000", "tcp://[::1]:7000"],
)
def test_a_control_socket_on_loopback_needs_no_client(tmp_path: Path, control: str) -> None:
    assert is_loopback(control)
    assert (
        load_config(write(tmp_path, f'[daemon]\ncontrol = "{control}"\n' + ONE_LINE)).clients == ()
    )


def test_read_control_endpoint_ignores_listen(tmp_path: Path) -> None:
    path = write(tmp_path, LISTEN + ONE_LINE)

    assert read_control_endpoint(path) == "ipc:///run/hindsight/control.sock"
