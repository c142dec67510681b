"""The pytest plugin (one line in conftest.py) and ``instkit check-pipeline``."""

from __future__ import annotations

import shlex
import textwrap

from click.testing import CliRunner

from instkit.cli import cli

pytest_plugins = ["pytester"]

MODULE = textwrap.dedent('''
    import numpy as np
    from instkit.transforms import Augment
    from instkit.transforms._albu import A

    good = Augment([A.HorizontalFlip(p=0.5), A.Resize(height=96, width=96, p=1.0)])

    def image_only_flip(sample, *, seed=None):
        out = good(sample, seed=seed)
        return out.replace(image=np.ascontiguousarray(out.image[:, ::-1]))
''')


def test_plugin_fixture_passes_a_good_pipeline_and_fails_a_broken_one(pytester):
    pytester.makeconftest('pytest_plugins = ["instkit.testing.pytest_plugin"]')
    pytester.makepyfile(mypipe=MODULE)
    pytester.makepyfile(test_mine=textwrap.dedent('''
        from instkit.synthetic import make_samples
        import mypipe

        def test_good(check_pipeline):
            check_pipeline(mypipe.good, make_samples(2, seed=1, image_size=(48, 64)))

        def test_broken(check_pipeline):
            check_pipeline(mypipe.image_only_flip, make_samples(2, seed=1, image_size=(48, 64)))
    '''))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--alignment-examples",
                                           "3")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*probe_code*"])


def test_cli_prints_violations_with_a_command_that_reproduces_each(tmp_path, tinycoco,
                                                                    monkeypatch):
    (tmp_path / "mypipe.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["--coco", str(tinycoco["val_json"]), "--images", str(tinycoco["val_images"]),
            "--max-samples", "2"]
    good = runner.invoke(cli, ["check-pipeline", "mypipe:good", *args])
    assert good.exit_code == 0, good.output
    assert "0 violation(s)" in good.output
    bad = runner.invoke(cli, ["check-pipeline", "mypipe:image_only_flip", *args, "--limit", "3"])
    assert bad.exit_code == 1, bad.output
    assert "[probe_code]" in bad.output
    line = next(x for x in bad.output.splitlines() if x.strip().startswith("reproduce:"))
    command = shlex.split(line.split("reproduce:", 1)[1])
    assert command[:2] == ["instkit", "check-pipeline"] and "--annotation-ids" in command
    again = runner.invoke(cli, command[1:])
    assert again.exit_code == 1, again.output
    assert "[probe_code]" in again.output and "1 samples" in again.output


def test_cli_refuses_a_bad_transform_name(tmp_path, tinycoco, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check-pipeline", "no_such_module:f", "--coco",
                                      str(tinycoco["val_json"])])
    assert result.exit_code == 2, result.output
    assert "cannot import" in result.output
