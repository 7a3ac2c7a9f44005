"""core.io.paths in-process: the files an input is made of, the output checks and their one-line messages.

(The CLI's refusals are in test_hostile_cli.py, run in a subprocess; these run the functions themselves, so that
`make mutmut` sees them.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
from osgeo import gdal

from hypernet_qgis.core.errors import InputError
from hypernet_qgis.core.io import paths
from hypernet_qgis.core.io.paths import check_job_paths, check_output_file, input_files


def _tif(path, value=1):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 3, 2, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
    ds.GetRasterBand(1).WriteArray(np.full((2, 3), value, np.uint8))
    ds = None
    return str(path)


def _vrt(path, source):
    gdal.BuildVRT(str(path), [str(source)]).FlushCache()
    return str(path)


def _message(call, *args):
    with pytest.raises(InputError) as info:
        call(*args)
    return str(info.value)


def test_partners_of_a_header_and_of_a_data_file(tmp_path):
    hdr = str(tmp_path / "scene.hdr")
    stem = str(tmp_path / "scene")
    assert paths._partners(hdr) == {hdr} | {stem + s for s in paths.ENVI_DATA_SUFFIXES}
    data = str(tmp_path / "scene.img")
    assert paths._partners(data) == {
        data,
        data + ".hdr",
        data + ".HDR",
        data + ".Hdr",
        stem + ".hdr",
        stem + ".HDR",
        stem + ".Hdr",
    }
    # the suffix test ignores case: an upper-case header is a header
    assert str(tmp_path / "scene.bil") in paths._partners(str(tmp_path / "scene.HDR"))


def test_absolute_expands_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert paths._absolute("~/a/../b.tif") == str(tmp_path / "b.tif")
    assert paths._absolute("c.tif") == str(tmp_path / "c.tif")


def test_gdal_files_follow_vrt_sources_to_the_depth_limit(tmp_path):
    base = _tif(tmp_path / "base.tif")
    chain = [base]
    for i in range(6):  # v0 -> base, v1 -> v0, ...
        chain.append(_vrt(tmp_path / f"v{i}.vrt", chain[-1]))
    assert paths._gdal_files(base) == {base}
    assert paths._gdal_files(chain[1]) == {chain[1], base}
    # depth 0..4 are opened (_MAX_DEPTH = 4): v4's sources reach down to base
    assert paths._gdal_files(chain[5]) == set(chain[:6])
    # one more level: v5 .. v0 are listed, base (behind the fifth VRT) is not
    assert paths._gdal_files(chain[6]) == set(chain[1:7])
    # no raster, no file: nothing
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    assert paths._gdal_files(str(text)) == set()
    assert paths._gdal_files(str(tmp_path / "missing.tif")) == set()
    assert paths._gdal_files(str(tmp_path)) == set()


def test_input_files_maps_every_file_to_the_input_as_given(tmp_path, monkeypatch):
    base = _tif(tmp_path / "base.tif")
    vrt = _vrt(tmp_path / "stack.vrt", base)
    monkeypatch.chdir(tmp_path)
    taken = input_files(["stack.vrt", None, ""])
    assert taken[base] == "stack.vrt"
    assert taken[vrt] == "stack.vrt"
    assert taken[base + ".hdr"] == "stack.vrt"  # partners of every source
    assert taken[str(tmp_path / "base.HDR")] == "stack.vrt"
    assert set(taken.values()) == {"stack.vrt"}
    assert input_files([None, ""]) == {}
    # the first input that holds a file keeps it
    assert input_files([base, "stack.vrt"])[base] == base


def test_input_files_holds_the_real_path_of_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    base = _tif(real / "base.tif")
    link = tmp_path / "link"
    link.symlink_to(real)
    taken = input_files([str(link / "base.tif")])
    assert taken[str(link / "base.tif")] == str(link / "base.tif")
    assert taken[base] == str(link / "base.tif")


def test_same_file(tmp_path):
    a = tmp_path / "a.tif"
    a.write_bytes(b"x")
    hard = tmp_path / "hard.tif"
    os.link(a, hard)
    assert paths._same(str(a), str(tmp_path / "sub" / ".." / "a.tif"))
    assert paths._same(str(a), str(hard))  # another name of the same file: only samefile sees it
    assert not paths._same(str(a), str(tmp_path / "b.tif"))  # b does not exist: no error, not the same
    (tmp_path / "b.tif").write_bytes(b"x")
    assert not paths._same(str(a), str(tmp_path / "b.tif"))


def test_check_output_file_messages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output_file("out.tif", "The change map") == str(tmp_path / "out.tif")
    assert _message(check_output_file, "", "The change map") == (
        "The change map: no output file was given. Give a file name such as change.tif."
    )
    assert _message(check_output_file, "", "The model", "model.pt") == (
        "The model: no output file was given. Give a file name such as model.pt."
    )
    (tmp_path / "d").mkdir()
    assert _message(check_output_file, "d", "The change map", "x.tif") == (
        "The change map d is a folder. Give a file name such as d/x.tif."
    )
    missing = tmp_path / "missing"
    assert _message(check_output_file, "missing/x.tif", "The report") == (
        f"The report missing/x.tif: the folder {missing} does not exist. Create the folder or choose another "
        "output path."
    )
    (tmp_path / "f").write_text("a file")
    assert _message(check_output_file, "f/x.tif", "The report") == (
        f"The report f/x.tif: the folder {tmp_path / 'f'} is a file, not a folder. Create the folder or choose "
        "another output path."
    )
    ro = tmp_path / "ro.tif"
    ro.write_bytes(b"old")
    ro.chmod(0o444)
    try:
        assert _message(check_output_file, "ro.tif", "The change map") == (
            "The change map ro.tif exists and is read-only. Make it writable (chmod u+w) or choose another file "
            "name; read-only files are never replaced."
        )
    finally:
        ro.chmod(0o644)
    assert check_output_file("ro.tif", "The change map") == str(ro)
    # the write probe leaves nothing behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f", "ro.tif"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_check_output_file_in_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert _message(check_output_file, str(ro / "x.tif"), "The change map") == (
            f"The change map {ro / 'x.tif'}: the folder {ro} is not writable (Permission denied). Choose a folder "
            "you can write to."
        )
    finally:
        ro.chmod(0o700)


def test_check_job_paths_messages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = _tif(tmp_path / "base.tif")
    _vrt(tmp_path / "stack.vrt", base)
    check_job_paths({"The change map": "change.tif", "The intensity": None, "The report": ""}, ["stack.vrt"])
    check_job_paths(["change.tif", None, ""], ["stack.vrt", None])
    assert _message(check_job_paths, {"The change map": "stack.vrt"}, ["stack.vrt"]) == (
        "The change map stack.vrt would overwrite the input stack.vrt. Choose another output file name; inputs are "
        "never modified."
    )
    assert _message(check_job_paths, {"The change map": "base.tif"}, ["stack.vrt"]) == (
        "The change map base.tif would overwrite the input stack.vrt (a file that input is made of). Choose "
        "another output file name; inputs are never modified."
    )
    assert _message(check_job_paths, ["base.tif"], ["base.tif"]) == (
        "The output base.tif would overwrite the input base.tif. Choose another output file name; inputs are "
        "never modified."
    )
    assert _message(check_job_paths, {"The change map": "a.tif", "The intensity": "./a.tif"}, []) == (
        "The intensity and the change map have the same path (./a.tif). Give each output its own file name."
    )
    assert _message(check_job_paths, ["a.tif", "sub/../a.tif"], []) == (
        "Two outputs have the same path (sub/../a.tif). Give each output its own file name."
    )
    # an output that exists under another name of an input (a hard link) is found by samefile
    os.link(base, tmp_path / "hard.tif")
    assert "would overwrite the input stack.vrt (a file that input is made of)" in _message(
        check_job_paths, ["hard.tif"], ["stack.vrt"]
    )
    # outputs are checked one by one, before the inputs: a missing folder is named
    assert "does not exist" in _message(check_job_paths, ["nowhere/x.tif"], ["stack.vrt"])
    # a path object works as well as a string
    check_job_paths({"The change map": tmp_path / "new.tif"}, [tmp_path / "stack.vrt"])


def test_the_input_named_is_the_one_given_for_that_path(tmp_path, monkeypatch):
    """An output spelled like the second input (a link to the first) names that input, not the first."""
    monkeypatch.chdir(tmp_path)
    _tif(tmp_path / "a.tif")
    (tmp_path / "link.tif").symlink_to(tmp_path / "a.tif")
    assert _message(check_job_paths, ["link.tif"], ["a.tif", "link.tif"]) == (
        "The output link.tif would overwrite the input link.tif. Choose another output file name; inputs are "
        "never modified."
    )
    # the file behind both: the first input that holds it is named
    assert _message(check_job_paths, ["a.tif"], ["link.tif", "a.tif"]) == (
        "The output a.tif would overwrite the input link.tif. Choose another output file name; inputs are never "
        "modified."
    )
    # None and "" before a real input are skipped, not the end of the list
    assert input_files([None, "", "a.tif"])[str(tmp_path / "a.tif")] == "a.tif"


def test_a_partner_that_does_not_exist_yet_is_refused_through_a_linked_folder(tmp_path, monkeypatch):
    """The header an input could have (a.hdr) is refused also when spelled through a link to its folder."""
    real = tmp_path / "real"
    real.mkdir()
    _tif(real / "a.tif")
    (tmp_path / "via").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    assert _message(check_job_paths, {"The report": "via/a.hdr"}, ["real/a.tif"]) == (
        "The report via/a.hdr would overwrite the input real/a.tif (a file that input is made of). Choose another "
        "output file name; inputs are never modified."
    )
    # through the link, the input itself
    assert "would overwrite the input real/a.tif." in _message(check_job_paths, ["via/a.tif"], ["real/a.tif"])


def test_existing_outputs_that_are_no_input_are_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tif(tmp_path / "a.tif")
    (tmp_path / "old.tif").write_bytes(b"previous result")
    check_job_paths({"The change map": "old.tif"}, ["a.tif"])
    assert _message(check_job_paths, {"The change map": "nowhere/x.tif"}, ["a.tif"]) == (
        f"The change map nowhere/x.tif: the folder {tmp_path / 'nowhere'} does not exist. Create the folder or "
        "choose another output path."
    )


def test_gdal_files_of_a_vector_a_memory_source_and_with_gdal_exceptions(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    assert paths._gdal_files(str(table)) == set()  # GDAL opens a CSV as a vector: not a raster, no files
    mem = "/vsimem/test_paths_source.tif"
    _tif(mem)
    try:
        vrt = _vrt(tmp_path / "on_memory.vrt", mem)
        assert paths._gdal_files(vrt) == {vrt}  # GDAL's virtual files are never outputs
    finally:
        gdal.Unlink(mem)
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    gdal.UseExceptions()
    try:
        assert paths._gdal_files(str(text)) == set()
    finally:
        gdal.DontUseExceptions()


def test_read_only_means_no_owner_write_bit_even_for_root(tmp_path):
    f = tmp_path / "tool.tif"
    f.write_bytes(b"old")
    f.chmod(0o555)  # r-x for all: read-only, although root may write (os.access says yes)
    try:
        assert "exists and is read-only" in _message(check_output_file, str(f), "The change map")
    finally:
        f.chmod(0o644)


def test_a_folder_nobody_may_create_files_in(tmp_path):
    """/sys refuses new files even to root; the probe is made in the output's own folder."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError as exc:
        reason = exc.strerror
    assert _message(check_output_file, "/sys/x.tif", "The change map") == (
        f"The change map /sys/x.tif: the folder /sys is not writable ({reason}). Choose a folder you can write to."
    )
