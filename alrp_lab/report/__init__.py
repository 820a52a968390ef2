"""Reports rebuilt from results files alone: the paper's tables and Figure 4's plot."""

from alrp_lab.report.plots import plot_grad_balance, read_grad_balance
from alrp_lab.report.tables import (
    FORMATS,
    Cell,
    TableData,
    build_table,
    collect_table,
    render_table,
    write_tables,
)

__all__ = [
    "FORMATS",
    "Cell",
    "TableData",
    "build_table",
    "collect_table",
    "plot_grad_balance",
    "read_grad_balance",
    "render_table",
    "write_tables",
]
