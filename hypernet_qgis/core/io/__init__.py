"""Reading and writing: rasters (GDAL), atomic file sets, job path checks, windowed scratch files, alignment of
pairs on different grids, change polygons."""
