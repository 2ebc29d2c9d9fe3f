"""`barlowtwins report`: one self-contained HTML page (and the PNGs) from one or more run folders.

    >>> from barlowtwins.report import build_report
    >>> result = build_report(["runs/fashion-mnist"], "report.html")
    >>> result.figures          # {"loss": Path("report_files/loss.png"), ...}

Needs matplotlib (``pip install 'barlowtwins[report]'``).

The report writes only what it names: the page, and its figures as PNG files in ``<page stem>_files/``, a folder it
makes itself and marks with a ``.barlowtwins-report`` file (`ASSETS_MARKER`, which lists the figures written there).
Only a folder with that mark is written into again, and the only files ever removed from it are figures the
previous report listed there and this one no longer draws. A ``<stem>_files`` folder without the mark (a web
page's saved images, say) is refused in one line before any work, as is a symbolic link in its place, and nothing
in it is touched: choose another ``--output``. An empty folder without the mark is taken over.
"""

from barlowtwins.report.build import ASSETS_MARKER, ReportResult, asset_folder, build_report, describe_images
from barlowtwins.report.runs import RunData, load_run

__all__ = ["ASSETS_MARKER", "ReportResult", "RunData", "asset_folder", "build_report", "describe_images", "load_run"]
