"""Meshes from image masks and of the unit square (meshes.image_mesh), and their XDMF + HDF5
files (meshes.io)."""

import numpy as np
import pytest

from meshes import (
    MeshData,
    cell_components,
    mesh_from_mask,
    read_mesh,
    rectangle_mesh,
    triangle_areas,
    unit_square_mesh,
    write_mesh,
)
from solvers.exchange import InputError, Mesh


def signed_areas(mesh: Mesh) -> np.ndarray:
    p = mesh.vertices[mesh.cells]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def disc_mask(n, centre, radius_mm, affine):
    """Pixels of an n x n image whose centres (voxel (i, j) -> mm by `affine`) lie in the disc."""
    i, j = np.mgrid[:n, :n]
    x = affine[0, 0] * i + affine[0, 1] * j + affine[0, 2]
    y = affine[1, 0] * i + affine[1, 1] * j + affine[1, 2]
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius_mm**2


def test_unit_square_and_rectangle_meshes():
    """unit_square_mesh(n): (n+1)^2 vertices, 2n^2 counter-clockwise cells of area 1/(2n^2),
    one connected component; rectangle_mesh(nx, ny, w, h) has area w*h."""
    mesh = unit_square_mesh(8)
    assert mesh.vertices.shape == (81, 2) and mesh.cells.shape == (128, 3)
    np.testing.assert_allclose(signed_areas(mesh), 1 / 128, rtol=1e-12)
    assert cell_components(mesh) == 1
    rect = rectangle_mesh(5, 3, 2.0, 0.5)
    assert len(rect.cells) == 30
    assert triangle_areas(rect.vertices, rect.cells).sum() == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(InputError, match="integer >= 1"):
        unit_square_mesh(0)


def test_disc_mask_mesh_area_and_fields(report):
    """A disc of radius 30 mm sampled on pixels of 0.8 x 1.2 mm (3x3 affine with offset): the
    mesh of the set pixels has the disc's area pi*30^2 within 2% (also when coarsened by 2),
    is one edge-connected component with counter-clockwise cells in mm, and carries fields:
    per cell the image value of its pixel (block mean when coarsened), per vertex the bilinear
    interpolation (exact for a linear image: 2*i + 3*j at the vertex's voxel coordinates)."""
    affine = np.array([[0.8, 0.0, -50.0], [0.0, 1.2, -60.0], [0.0, 0.0, 1.0]])
    mask = disc_mask(128, (2.0, -3.0), 30.0, affine)
    i, j = np.mgrid[:128, :128].astype(float)
    linear = 2.0 * i + 3.0 * j
    exact = np.pi * 30.0**2
    data = mesh_from_mask(mask, affine, cell_images={"lin": linear},
                          vertex_images={"lin_v": linear})
    coarse = mesh_from_mask(mask, affine, coarsen=2)
    errors = [abs(data.area() - exact) / exact, abs(coarse.area() - exact) / exact]
    report(f"disc r=30 mm: {data.n_cells} cells, area error {errors[0]:.3%}; coarsened x2: "
           f"{coarse.n_cells} cells, area error {errors[1]:.3%}")
    assert max(errors) < 0.02
    assert data.n_cells == 2 * mask.sum()
    assert cell_components(data.mesh) == 1 and cell_components(coarse.mesh) == 1
    assert np.all(signed_areas(data.mesh) > 0) and data.mesh.units == "mm"
    np.testing.assert_allclose(signed_areas(data.mesh), 0.5 * 0.8 * 1.2, rtol=1e-12)
    # vertex voxel coordinates from the inverse affine; the bilinear field is exact there
    voxel = (data.mesh.vertices - affine[:2, 2]) / np.array([0.8, 1.2])
    np.testing.assert_allclose(data.vertex_fields["lin_v"], 2 * voxel[:, 0] + 3 * voxel[:, 1],
                               atol=1e-9)
    assert set(np.unique(data.cell_fields["lin"])) <= set(np.unique(linear[mask]))


def test_largest_component_and_errors():
    """Two disjoint discs: only the larger one is meshed (one component); with
    largest_component=False both are (two components). An empty mask, a 3-D mask, a wrong
    affine and a field of the wrong shape raise InputError."""
    affine = np.eye(3)
    mask = disc_mask(80, (20, 20), 12, affine) | disc_mask(80, (60, 60), 6, affine)
    big = mesh_from_mask(mask, affine)
    both = mesh_from_mask(mask, affine, largest_component=False)
    assert cell_components(big.mesh) == 1 and cell_components(both.mesh) == 2
    assert big.n_cells == 2 * disc_mask(80, (20, 20), 12, affine).sum()
    with pytest.raises(InputError, match="empty"):
        mesh_from_mask(np.zeros((5, 5), bool), affine)
    with pytest.raises(InputError, match="2-D"):
        mesh_from_mask(np.ones((2, 2, 2), bool), affine)
    with pytest.raises(InputError, match="3x3"):
        mesh_from_mask(mask, np.eye(2))
    with pytest.raises(InputError, match="shape"):
        mesh_from_mask(mask, affine, cell_images={"x": np.ones((3, 3))})


def test_mesh_file_round_trip_and_errors(tmp_path):
    """write_mesh/read_mesh: vertices, cells, units and cell/vertex fields come back exactly;
    the XDMF names the companion .h5 by file name. A missing file, a file that is not XDMF,
    and an XDMF whose .h5 is missing or truncated raise one-line InputErrors naming the file."""
    data = mesh_from_mask(disc_mask(30, (15, 15), 10, np.eye(3)), np.eye(3),
                          cell_images={"c": np.arange(900.0).reshape(30, 30)},
                          vertex_images={"v": np.ones((30, 30))})
    path = write_mesh(tmp_path / "disc.xdmf", data, cell_fields={"extra": np.zeros(data.n_cells)})
    assert "disc.h5:/Mesh/mesh/topology" in path.read_text()
    back = read_mesh(path)
    np.testing.assert_array_equal(back.mesh.vertices, data.mesh.vertices)
    np.testing.assert_array_equal(back.mesh.cells, data.mesh.cells)
    assert back.mesh.units == "mm"
    assert set(back.cell_fields) == {"c", "extra"} and set(back.vertex_fields) == {"v"}
    np.testing.assert_array_equal(back.cell_fields["c"], data.cell_fields["c"])

    square = write_mesh(tmp_path / "square.xdmf", unit_square_mesh(2))
    assert read_mesh(square).mesh.units == "dimensionless"
    with pytest.raises(InputError, match="must end in .xdmf"):
        write_mesh(tmp_path / "m.h5", unit_square_mesh(2))
    with pytest.raises(InputError, match="vertex field 'v' has shape"):
        write_mesh(tmp_path / "bad.xdmf", MeshData(unit_square_mesh(2), vertex_fields={"v": [1]}))

    with pytest.raises(InputError, match=r"nothing\.xdmf: mesh file does not exist"):
        read_mesh(tmp_path / "nothing.xdmf")
    garbage = tmp_path / "garbage.xdmf"
    garbage.write_text("not xml <<")
    with pytest.raises(InputError, match=r"garbage\.xdmf: not a readable XDMF file"):
        read_mesh(garbage)
    (tmp_path / "disc.h5").write_bytes(b"\x89HDF\r\n truncated")
    with pytest.raises(InputError, match=r"disc\.h5: not a readable HDF5 file"):
        read_mesh(path)
    (tmp_path / "disc.h5").unlink()
    with pytest.raises(InputError, match=r"disc\.h5: file does not exist \(the data of"):
        read_mesh(path)


def test_dolfinx_reads_the_mesh_file(tmp_path):
    """dolfinx's XDMFFile reads a mesh written by write_mesh: same number of cells and the same
    area (to round-off)."""
    pytest.importorskip("dolfinx")
    from solvers.fem.dolfinx_adapter import xdmf_mesh_summary

    data = mesh_from_mask(disc_mask(40, (20, 20), 15, np.eye(3)), np.diag([0.5, 2.0, 1.0]),
                          cell_images={"c": np.ones((40, 40))})
    path = write_mesh(tmp_path / "disc.xdmf", data)
    n_cells, area = xdmf_mesh_summary(path)
    assert n_cells == data.n_cells
    assert area == pytest.approx(data.area(), rel=1e-12)


def test_icbm152_slice_gives_connected_mesh(tmp_path, report):
    """The ICBM152 2009 grey- and white-matter probability maps shipped in nilearn's wheel
    (1 mm, 197 x 233 x 189), axial slice z = 0 mm: the pixels with P(GM) + P(WM) > 0.5 give a
    mesh in mm (largest component; measured 37,532 cells, 18,766 mm^2) that is one
    edge-connected component, carries the GM/WM maps per cell in [0, 1], and survives an
    XDMF round trip; coarsened by 2 it is still connected (measured 9,390 cells)."""
    pytest.importorskip("nilearn")
    nib = pytest.importorskip("nibabel")
    from nilearn import datasets

    gm_image = nib.load(datasets.GM_MNI152_FILE_PATH)
    wm_image = nib.load(datasets.WM_MNI152_FILE_PATH)
    k = int(round(np.linalg.solve(gm_image.affine, [0.0, 0.0, 0.0, 1.0])[2]))
    gm = np.asarray(gm_image.dataobj[:, :, k], dtype=np.float64) / 255.0
    wm = np.asarray(wm_image.dataobj[:, :, k], dtype=np.float64) / 255.0
    data = mesh_from_mask(gm + wm > 0.5, gm_image.affine, slice_index=k,
                          cell_images={"gm": gm, "wm": wm})
    coarse = mesh_from_mask(gm + wm > 0.5, gm_image.affine, slice_index=k, coarsen=2)
    report(f"ICBM152 axial slice z=0 mm (k={k}): {data.n_cells} cells, {data.n_vertices} "
           f"vertices, area {data.area():.0f} mm^2; coarsened x2: {coarse.n_cells} cells")
    assert cell_components(data.mesh) == 1 and cell_components(coarse.mesh) == 1
    assert data.n_cells > 20_000 and 10_000 < data.area() < 30_000
    for name in ("gm", "wm"):
        assert 0.0 <= data.cell_fields[name].min() and data.cell_fields[name].max() <= 1.0
    assert np.mean(data.cell_fields["gm"] + data.cell_fields["wm"]) > 0.7
    back = read_mesh(write_mesh(tmp_path / "brain.xdmf", data))
    assert back.n_cells == data.n_cells and back.mesh.units == "mm"
