"""The protect job's arguments: a value the library would refuse is refused at start, naming the flag."""

from __future__ import annotations

from click.testing import CliRunner

from jobs.cli import cli
from tests.fixtures.catalogs import make_image, make_mask


def test_an_eps_out_of_the_method_range_is_a_one_line_error_before_any_work(tmp_path, tiny_model):
    """Before, --eps was only checked to be positive: the run started and every image became an error row."""
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    make_image(0, (40, 40)).save(catalog_dir / "a.png")
    make_mask((40, 40)).save(catalog_dir / "a_mask.png")
    result = CliRunner().invoke(cli, ["protect", "--input", str(catalog_dir), "--output", str(tmp_path / "out"),
                                      "--model", tiny_model, "--eps", "0.5"])
    assert result.exit_code == 2, result.output
    assert "--eps: eps 0.5 is out of range for method 'rtb'" in result.output and "(0, 0.25]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_budget_and_colour_settings_are_refused_at_start_naming_the_flag(tmp_path):
    runner = CliRunner()
    for flags, message in ((["--budget", "perceptual"], "--budget must be one of uniform, jnd; got 'perceptual'"),
                           (["--colour", "hsv"], "--colour must be one of rgb, luma-chroma; got 'hsv'"),
                           (["--chroma-ratio", "1.5"], "--chroma-ratio must be a number in [0, 1], got 1.5")):
        result = runner.invoke(cli, ["protect", "--input", str(tmp_path), "--output", str(tmp_path / "out"), *flags])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
