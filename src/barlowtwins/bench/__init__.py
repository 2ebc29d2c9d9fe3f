"""``barlowtwins bench``: throughput of the model alone, each data path alone, end to end, and the official
per-image PIL pipeline for comparison (`run`), on synthetic JPEGs (`jpegs`) or a data set, timed with hard
limits (`timing`), written as a table, a RESULTS.md row and JSON (`tables`).

    >>> from barlowtwins.bench import BenchSpec, run_bench, table
    >>> result = run_bench(BenchSpec(backbone="resnet50", image_size=224, batch_size=64, data_paths=("cpu",)))
    >>> print(table(result))
"""

from barlowtwins.bench.jpegs import make_jpeg_folder
from barlowtwins.bench.official import official_loader, official_transform
from barlowtwins.bench.run import (
           PEAK_TFLOPS,
           BenchResult,
           BenchSpec,
           environment,
           path_key,
           peak_tflops,
           ratios,
           run_bench,
)
from barlowtwins.bench.tables import RESULTS_HEADER, append_results, results_row, save_json, table
from barlowtwins.bench.timing import MeasurementTimeout, Timing, measure_batches, time_batches, time_limit

__all__ = ["PEAK_TFLOPS", "RESULTS_HEADER", "BenchResult", "BenchSpec", "MeasurementTimeout", "Timing",
           "append_results", "environment", "make_jpeg_folder", "measure_batches", "official_loader",
           "official_transform", "path_key", "peak_tflops", "ratios", "results_row", "run_bench", "save_json",
           "table", "time_batches", "time_limit"]
